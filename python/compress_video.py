#!/usr/bin/env python3
"""The main job (same as the ``vidcom2-demo`` console command): compress a video with VidCom2,
print what was kept and how long the selection took, and write a PNG of it.

    python python/compress_video.py [VIDEO] [--frames 32] [--retention 0.25] [--out demo.png]
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vidcom2_kernels.demo import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
