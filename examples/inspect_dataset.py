"""`segzoo inspect` as a script: `python examples/inspect_dataset.py --help` lists its flags (the same as `segzoo inspect --help`)."""

from segzoo.cli import command_main

main = command_main("inspect")

if __name__ == "__main__":
    main()
