"""One module per `mof-llava` subcommand (argument parsing only; the work lives in the library)."""
