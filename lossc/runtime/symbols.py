"""The external functions an object file asks for, checked before any loader links it.

lossc's machine code calls a known few C library functions (codegen/externals.py).
`check_externals` reads the names an object file leaves undefined, from its symbol
table, and refuses the object if any is not one of them, whichever loader is to link
it: lossc's ELF loader resolves names itself (and refuses the same), but LLVM's MCJIT
would resolve any name the process knows, `system` included.

Object formats: ELF (64-bit, either byte order: Linux on any machine) and 64-bit
Mach-O (macOS), whose symbol names carry a leading underscore. Every offset and size
read from the file is checked against its length.

Standard library only, like runtime/elf.py.
"""
from __future__ import annotations

import struct

from lossc.codegen.externals import ALLOWED


class SymbolError(ValueError):
    """The object's symbols cannot be read, or name a function lossc never calls."""


def check_externals(obj: bytes) -> None:
    """Raise SymbolError unless every function `obj` leaves undefined is in ALLOWED."""
    foreign = sorted(external_symbols(obj) - ALLOWED)
    if foreign:
        raise SymbolError(f"the machine code calls {', '.join(map(repr, foreign))}, which "
                          "lossc's code generator never calls")


def external_symbols(obj: bytes) -> set[str]:
    """The names of the undefined symbols of an ELF or Mach-O object file."""
    obj = bytes(obj)
    if obj[:4] == b"\x7fELF":
        names = _elf_undefined(obj)
    elif obj[:4] == _MACHO_MAGIC:
        names = [n[1:] if n.startswith(b"_") else n for n in _macho_undefined(obj)]
    else:
        raise SymbolError("the machine code is neither an ELF nor a 64-bit Mach-O object")
    try:
        return {n.decode("ascii") for n in names}
    except UnicodeDecodeError:
        raise SymbolError("the machine code has a symbol name that is not ASCII") from None


def _name(obj: bytes, start: int, end: int, offset: int) -> bytes:
    first = start + offset
    stop = obj.find(b"\0", first, end) if start <= first < end else -1
    if stop < 0:
        raise SymbolError("the machine code has a damaged string table")
    return obj[first:stop]


def _unpack(layout: struct.Struct, obj: bytes, offset: int) -> tuple:
    if offset < 0 or offset + layout.size > len(obj):
        raise SymbolError("the machine code's tables extend past its end")
    return layout.unpack_from(obj, offset)


# ------------------------------------------------------------ ELF

_SHT_SYMTAB = 2
_SHN_UNDEF = 0


def _elf_undefined(obj: bytes) -> list[bytes]:
    if len(obj) < 16 or obj[4] != 2 or obj[5] not in (1, 2):
        raise SymbolError("the machine code is not a 64-bit ELF object")
    order = "<" if obj[5] == 1 else ">"
    ehdr = struct.Struct(order + "16sHHIQQQIHHHHHH")
    shdr = struct.Struct(order + "IIQQQQIIQQ")
    sym = struct.Struct(order + "IBBHQQ")
    fields = _unpack(ehdr, obj, 0)
    shoff, shentsize, shnum = fields[6], fields[11], fields[12]
    if shentsize != shdr.size or shoff + shnum * shdr.size > len(obj):
        raise SymbolError("the machine code has a damaged section table")
    sections = list(shdr.iter_unpack(obj[shoff:shoff + shnum * shdr.size]))
    names = []
    for _, kind, _, _, offset, size, link, _, _, entsize in sections:
        if kind != _SHT_SYMTAB:
            continue
        if entsize != sym.size or size % sym.size or link >= len(sections) \
                or offset + size > len(obj):
            raise SymbolError("the machine code has a damaged symbol table")
        strings = sections[link]
        start, end = strings[4], strings[4] + strings[5]
        if end > len(obj):
            raise SymbolError("the machine code has a damaged string table")
        for name, _, _, index, _, _ in sym.iter_unpack(obj[offset:offset + size]):
            if index == _SHN_UNDEF and name:
                names.append(_name(obj, start, end, name))
    return names


# ------------------------------------------------------------ Mach-O

_MACHO_MAGIC = struct.pack("<I", 0xfeedfacf)      # 64-bit, little-endian
_MACHO_HEADER = struct.Struct("<IiiIIIII")         # magic cpu subtype filetype ncmds ...
_LOAD_COMMAND = struct.Struct("<II")               # cmd cmdsize
_LC_SYMTAB = 0x2
_SYMTAB = struct.Struct("<IIIIII")                 # cmd cmdsize symoff nsyms stroff strsize
_NLIST = struct.Struct("<IBBHQ")                   # strx type sect desc value
_N_STAB, _N_TYPE, _N_EXT, _N_UNDF = 0xe0, 0x0e, 0x01, 0x0


def _macho_undefined(obj: bytes) -> list[bytes]:
    ncmds = _unpack(_MACHO_HEADER, obj, 0)[4]
    at, names = _MACHO_HEADER.size, []
    for _ in range(ncmds):
        cmd, size = _unpack(_LOAD_COMMAND, obj, at)
        if size < _LOAD_COMMAND.size:
            raise SymbolError("the machine code has a damaged load command")
        if cmd == _LC_SYMTAB:
            _, _, symoff, nsyms, stroff, strsize = _unpack(_SYMTAB, obj, at)
            if stroff + strsize > len(obj):
                raise SymbolError("the machine code has a damaged string table")
            for k in range(nsyms):
                strx, kind, _, _, _ = _unpack(_NLIST, obj, symoff + k * _NLIST.size)
                if not kind & _N_STAB and kind & _N_EXT and kind & _N_TYPE == _N_UNDF:
                    names.append(_name(obj, stroff, stroff + strsize, strx))
        at += size
    return names
