"""`segzoo train` as a script: `python examples/train.py --help` lists its flags (the same as `segzoo train --help`)."""

from segzoo.cli import command_main

main = command_main("train")

if __name__ == "__main__":
    main()
