"""One module per `netspec` command: HELP, add_arguments(parser), run(args) -> exit code."""
