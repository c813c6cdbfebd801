"""``python -m exonta`` runs the command-line interface."""

from exonta.cli.main import main

if __name__ == "__main__":
    main()
