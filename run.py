"""Restore an image with Deep Image Prior: ``python run.py task=inpainting arch=skip_depth6``."""


from dip.signals import exit_interrupted, interrupt_on_stop_signals  # light: torch and Hydra load below

if __name__ == "__main__":
    interrupt_on_stop_signals()  # a stop while the libraries load ends the command as Ctrl-C does
    try:
        from dip.cli import main
    except KeyboardInterrupt as interruption:  # nothing has started
        exit_interrupted(interruption)
    main()
