"""Restore an image with Deep Image Prior: ``python run.py task=inpainting arch=skip_depth6``."""

import sys

if __name__ == "__main__":
    try:
        from dip.cli import main
    except KeyboardInterrupt:  # Ctrl-C while the libraries load: nothing has started
        print("interrupted by SIGINT", file=sys.stderr)
        raise SystemExit(130) from None
    main()
