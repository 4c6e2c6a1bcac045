"""Restore an image with Deep Image Prior: ``python run.py task=inpainting arch=skip_depth6``."""

from dip.cli import main

if __name__ == "__main__":
    main()
