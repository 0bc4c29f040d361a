//! Validation of user input (flags and arguments), shared by the CLI and any future API.
