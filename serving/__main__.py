"""``python -m serving``: TF Serving's command line, served by the gateway."""
from serving.cli import main

if __name__ == "__main__":
    main()
