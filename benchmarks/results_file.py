"""benchmarks/results.md: one section per CPU model, each the latest full run on it.

A run replaces the section of its own CPU (benchmarks.machine.Cpu.same_as) and keeps the
others, so a run on an AMD machine leaves the Intel figures standing and vice versa.
Each section starts with a `## ` heading followed by a marker line naming the CPU:

    ## AMD EPYC (AuthenticAMD, family 26, model 2): run of 2026-12-06
    <!-- lossc-bench cpu: AuthenticAMD|AMD EPYC|26|2 -->

A file written before sections existed (one run, with `## Machine`, `## Targets`, ...
and a `- CPU: NAME, N cores, SIMD` line) becomes the section of the CPU it names.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from benchmarks.machine import Cpu

TITLE = "# lossc benchmark results"
MARK_OPEN, MARK_CLOSE = "<!-- lossc-bench cpu: ", " -->"
INTRO = (
    "Written by `make bench` (`python -m benchmarks.run`); the workloads are those of "
    "BENCHMARKS.md. One section per CPU model the suite has run on, each the latest full "
    "run on that CPU: every figure is a ratio or a rate measured in one run on one "
    "machine, and a choice that pays on one CPU may not on another.")


@dataclass
class Section:
    cpu: Cpu
    lines: list          # the heading, the marker, then the body

    @classmethod
    def new(cls, cpu: Cpu, date: str, body: list) -> "Section":
        return cls(cpu, [heading(cpu, date), marker(cpu), ""] + list(body))


def heading(cpu: Cpu, date: str) -> str:
    ident = ", ".join(x for x in (cpu.vendor, None if cpu.family is None
                                  else f"family {cpu.family}",
                                  None if cpu.model is None else f"model {cpu.model}") if x)
    return f"## {cpu.name} ({ident}): run of {date}"


def marker(cpu: Cpu) -> str:
    return MARK_OPEN + cpu.key() + MARK_CLOSE


def parse(text: str) -> list:
    """The sections of a results file, in order (a file of the older one-run layout gives
    one section; a file with neither gives none)."""
    lines = text.splitlines()
    marks = [k for k, ln in enumerate(lines) if ln.startswith(MARK_OPEN)]
    if not marks:
        legacy = legacy_section(lines)
        return [legacy] if legacy is not None else []
    starts = []
    for k in marks:
        h = k - 1
        while h >= 0 and not lines[h].strip():
            h -= 1
        starts.append(h if h >= 0 and lines[h].startswith("## ") else k)
    out = []
    for n, (start, k) in enumerate(zip(starts, marks)):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        key = lines[k][len(MARK_OPEN):].rsplit(MARK_CLOSE, 1)[0]
        body = lines[start:end]
        while body and not body[-1].strip():
            body.pop()
        out.append(Section(Cpu.from_key(key), body))
    return out


_LEGACY_CPU = re.compile(r"^- CPU: (?P<name>.+?), \d+ cores(?:, .*)?$")
_LEGACY_DATE = re.compile(r"^- date: (?P<date>\d{4}-\d{2}-\d{2})")


def legacy_section(lines: list):
    """The section of a file written by the one-run layout, or None if it is not one."""
    name = date = None
    for ln in lines:
        m = _LEGACY_CPU.match(ln)
        if m and name is None:
            name = m.group("name")
        m = _LEGACY_DATE.match(ln)
        if m and date is None:
            date = m.group("date")
    if name is None or not any(ln.startswith("## ") for ln in lines):
        return None
    # everything after the title: the run's own paragraph, then its parts
    first = next((k + 1 for k, ln in enumerate(lines) if ln.startswith("# ")), 0)
    vendor = ("GenuineIntel" if "Intel" in name else "AuthenticAMD" if "AMD" in name
              else "unknown vendor")
    cpu = Cpu(name, vendor)
    body = ["#" + ln if ln.startswith("## ") else ln for ln in lines[first:]]
    while body and not body[0].strip():
        body.pop(0)
    while body and not body[-1].strip():
        body.pop()
    return Section.new(cpu, date or "an unrecorded date", body)


def merge(text: str, section: Section) -> str:
    """The results file `text` (empty: none yet) with `section` in place of its CPU's
    section, or first if that CPU has none."""
    sections = parse(text) if text.strip() else []
    if text.strip() and not sections:
        raise ValueError("the results file holds no section this suite wrote (no CPU "
                         "marker, no '- CPU:' line): not overwritten")
    for k, s in enumerate(sections):
        if s.cpu.same_as(section.cpu):
            sections[k] = section
            break
    else:
        sections.insert(0, section)
    return render(sections)


def render(sections: list) -> str:
    out = [TITLE, "", INTRO, ""]
    for s in sections:
        out += s.lines + [""]
    return "\n".join(out)


def write(path: str, section: Section) -> None:
    """Merge `section` into the file at `path` (made if missing), written whole at once."""
    text = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
    new = merge(text, section)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(new)
    os.replace(tmp, path)
