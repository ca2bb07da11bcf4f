"""Shared by the bench scripts: each owns one marked section of bench/RESULTS.md."""

import os
import re

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
HEADER = "# Benchmark results\n\nEach section is written by the script it names; machines here are shared and noisy, so\nread the ratios and medians, not single numbers.\n"


def update_section(name, body, path=RESULTS):
    """Replaces the section `name` of the results file (or appends it)."""
    text = open(path).read() if os.path.exists(path) else HEADER
    block = f"<!-- begin {name} -->\n{body.strip()}\n<!-- end {name} -->"
    pattern = re.compile(rf"<!-- begin {re.escape(name)} -->.*?<!-- end {re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)
