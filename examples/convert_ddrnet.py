"""`segzoo convert` as a script: `python examples/convert_ddrnet.py --help` lists its flags (the same as `segzoo convert --help`)."""

from segzoo.cli import command_main

main = command_main("convert")

if __name__ == "__main__":
    main()
