"""The batch pipeline (SPEC §1, §3): validate-data -> train -> evaluate -> gate -> export -> publish."""
