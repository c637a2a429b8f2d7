"""`segzoo import` as a script: `python examples/import_pairs.py --help` lists its flags (the same as `segzoo import --help`)."""

from segzoo.cli import command_main

main = command_main("import")

if __name__ == "__main__":
    main()
