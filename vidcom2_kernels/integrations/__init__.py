"""Integrations with serving engines: :mod:`.vllm` (a ``vllm.general_plugins`` entry point) and
:mod:`.vllm_models` (vLLM model classes it registers). Nothing in the package imports them; vLLM
loads the plugin in each of its processes."""
