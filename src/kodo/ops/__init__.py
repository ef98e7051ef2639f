"""Operator tools shared by the CLI and the API: soaks today; batch control and diagnosis next."""
