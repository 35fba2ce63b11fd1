"""The epoch log as the user's logs print it: one `    key            : value` line per key."""


def format_value(key, value):
    """Exactly the user's log format: accuracies with 2 decimals, losses with 4, the lr compact."""
    if isinstance(value, (int, str)):
        return str(value)
    if "acc" in key:
        return f"{value:.2f}"
    if key == "lr":
        return f"{value:.6g}"
    return f"{value:.4f}"


def format_log(log, width=15):
    return "\n".join(f"    {str(key):{width}s}: {format_value(key, value)}" for key, value in log.items())
