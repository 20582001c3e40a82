"""Human-readable numbers for printed tables."""


def si(value: float, unit: str = "", digits: int = 2) -> str:
    """1.7563e10 -> '17.56 G' + unit (powers of 1000)."""
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= factor:
            return f"{value / factor:.{digits}f} {prefix}{unit}"
    return f"{value:.0f} {unit}".rstrip()


def binary(nbytes: float, digits: int = 2) -> str:
    """1048576 -> '1.00 MiB' (powers of 1024)."""
    for factor, prefix in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if abs(nbytes) >= factor:
            return f"{nbytes / factor:.{digits}f} {prefix}"
    return f"{nbytes:.0f} B"
