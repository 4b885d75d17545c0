"""Loading cached machine code without LLVM: a small ELF64 x86-64 object-file linker.

A compiled model's machine code is an ELF relocatable object made by LLVM
(`TargetMachine.emit_object`: position-independent, default code model, for this CPU).
Linking it through an MCJIT engine means importing llvmlite.binding and loading
libllvmlite first, 15-25 ms before anything runs, while the linking itself is little
work. `ElfCode` does that work in Python, in well under a millisecond for a typical
model, so loading a cached model never touches LLVM:

1. one anonymous private mapping is made, read-write, with room for every allocated
   section (.text, .rodata.cst*, .data, .bss, ...) at its alignment, a 16-byte stub
   per external function called, and a GOT slot per symbol the code reaches through
   the GOT;
2. the sections' bytes are copied in (.bss stays zero, as the mapping starts), and
   external symbols (memset, pow, sin, ...) are looked up in the process with dlsym,
   then in libm: only the few names lossc's code generator calls
   (codegen/externals.py), any other is refused;
3. the RELA relocations of the loaded sections are applied;
4. the code becomes read-execute and the rest read-only, except writable data, which
   stays read-write; each kind has pages of its own.

One mapping keeps every distance between sections within the +-2 GB that 32-bit
PC-relative relocations reach. An external function may live anywhere, so calls to it
go through a stub in the mapping that jumps to its absolute address. Unwind tables
(.eh_frame, which LLVM marks SHT_X86_64_UNWIND) are not loaded: nothing unwinds through
this code, and they would be of no use unless registered with the unwinder.

Anything the loader does not handle (another machine or file class, a symbol not
found) raises ElfLoadError before any code runs; a damaged file (an unknown relocation
type, a value that does not fit its field, an offset outside the file or a section)
raises ElfDamagedError. Every offset and size read from the file is checked, and all
writes go through a bounds-checked view of the mapping. MCJIT, the fallback, stops the
process on a damaged object (an assertion or a fatal error in LLVM) and reads more of
the file than this loader does: `check` makes every check ElfCode makes, and those of
what MCJIT reads besides (section names, every symbol, unwind tables and their
relocations), without loading anything; an object goes to MCJIT only if it passes.

Standard library only, and never llvmlite or numpy: a cheap import is the point. The
functions an object may call (codegen/externals.py ALLOWED) derive from the op table,
which imports NumPy; the memory functions nearly every object calls are allowed
without it, and the table is imported only for an object that calls anything else.
"""
from __future__ import annotations

import ctypes
import os
import struct
import sys

from lossc.codegen.abi import NATIVE_SIGNATURE

# a part of codegen/externals.py's MEMORY (tests/test_startup.py checks that these are
# in ALLOWED)
MEMORY_FUNCTIONS = frozenset(("memcpy", "memset"))

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")      # name type flags addr offset size link info align entsize
_SYM = struct.Struct("<IBBHQQ")           # name info other shndx value size
_RELA = struct.Struct("<QQq")             # offset info addend

ET_REL = 1
EM_X86_64 = 62
ELFCLASS64 = 2
ELFDATA2LSB = 1

SHT_PROGBITS = 1
SHT_SYMTAB = 2
SHT_STRTAB = 3
SHT_RELA = 4
SHT_NOBITS = 8
SHT_REL = 9
SHT_INIT_ARRAY = 14
SHT_FINI_ARRAY = 15
SHT_PREINIT_ARRAY = 16

SHF_WRITE = 0x1
SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4
SHF_TLS = 0x400

SHN_UNDEF = 0
SHN_ABS = 0xfff1
SHN_COMMON = 0xfff2

STB_LOCAL = 0
STT_FUNC = 2
STT_SECTION = 3
STT_FILE = 4

R_X86_64_64 = 1
R_X86_64_PC32 = 2
R_X86_64_PLT32 = 4
R_X86_64_GOTPCREL = 9
R_X86_64_32 = 10
R_X86_64_32S = 11
R_X86_64_PC64 = 24
R_X86_64_GOTPCRELX = 41
R_X86_64_REX_GOTPCRELX = 42

# how each supported relocation is computed (S symbol, A addend, P place, G GOT slot)
_ABSOLUTE = 0      # S + A
_PCREL = 1         # S + A - P
_BRANCH = 2        # S + A - P, an external S through its stub
_GOT = 3           # G + A - P
# the fields relocations write: packing a 32-bit one checks that the value fits
# (signed or unsigned); 64-bit values wrap around
_S32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
# type -> (field, computation)
_RELOCATIONS = {
    R_X86_64_64: (_U64, _ABSOLUTE),
    R_X86_64_32: (_U32, _ABSOLUTE),
    R_X86_64_32S: (_S32, _ABSOLUTE),
    R_X86_64_PC64: (_U64, _PCREL),
    # in position-independent code an external symbol's data is reached through the
    # GOT, so a 32-bit PC-relative reference to one is a call or jump
    R_X86_64_PC32: (_S32, _BRANCH),
    R_X86_64_PLT32: (_S32, _BRANCH),
    # the instruction loads the address from a GOT slot; it is never relaxed here
    R_X86_64_GOTPCREL: (_S32, _GOT),
    R_X86_64_GOTPCRELX: (_S32, _GOT),
    R_X86_64_REX_GOTPCRELX: (_S32, _GOT),
}
_MASK64 = (1 << 64) - 1

_STUB = struct.Struct("<6sQ")                 # jmp *0(%rip), then the address it reads
_JMP_RIP = b"\xff\x25\x00\x00\x00\x00"
_STUB_SIZE = 16
_GOT_SLOT = 8
_MAX_IMAGE = 1 << 31    # larger, and 32-bit PC-relative code could not span it

PROT_READ = 0x1
PROT_WRITE = 0x2
PROT_EXEC = 0x4
MAP_PRIVATE = 0x02
MAP_ANONYMOUS = 0x20
_MAP_FAILED = (1 << 64) - 1


class ElfLoadError(Exception):
    """The object cannot be loaded by this loader (MCJIT may, if it passes `check`)."""


class ElfDamagedError(ElfLoadError):
    """The object is malformed: an offset, size or index outside the file, its sections
    or its tables, a relocation of a type no x86-64 loader here knows or whose value
    does not fit. MCJIT trusts its input (it aborts the process on such an object), so
    the caller refuses it rather than fall back. lossc's code generator never makes one;
    a crafted artifact loaded with trust=True can hold one."""


def supported() -> bool:
    """Whether this loader can run here: Linux on x86-64. (os.uname gives what
    platform.machine would, without the 2 ms that importing platform costs.)"""
    return sys.platform.startswith("linux") and os.uname().machine == "x86_64"


class ElfCode:
    """An object file's code linked into this process: a drop-in for NativeCode
    (lossc/codegen/jit.py). `addresses` and `functions` hold each requested global
    function. The instance owns the memory the code lives in: keep it alive while the
    functions are used, and do not call them after `close()`.

    ctypes releases the GIL during each call, so threads can run them in parallel."""

    def __init__(self, obj: bytes, names: tuple[str, ...]):
        self._base = None     # the mapping, once made; close() unmaps it
        self._size = 0
        self.addresses: dict[str, int] = {}
        self.functions: dict = {}
        obj = bytes(obj)
        page = os.sysconf("SC_PAGE_SIZE")
        (sections, symbols, entry_points, relocations, externals, stubs, got, placed,
         stub_offset, got_offset, rx_end, ro_end, size) = _plan(obj, names, page, _resolve)

        lib = _libc()
        base = lib.mmap(None, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if base is None or base == _MAP_FAILED:
            raise ElfLoadError(f"mmap of {size} bytes failed: {os.strerror(ctypes.get_errno())}")
        self._base, self._size, self._munmap = base, size, lib.munmap
        try:
            address = _symbol_addresses(symbols, placed, base, externals)
            stub_address = {sym: base + stub_offset + _STUB_SIZE * k for sym, k in stubs.items()}
            got_address = {sym: base + got_offset + _GOT_SLOT * k for sym, k in got.items()}
            with memoryview((ctypes.c_ubyte * size).from_address(base)) as raw, \
                    raw.cast("B") as view:
                _copy_sections(view, obj, sections, placed)
                for sym, at in stub_address.items():
                    _STUB.pack_into(view, at - base, _JMP_RIP, externals[sym])
                for sym, at in got_address.items():
                    _U64.pack_into(view, at - base, address[sym] & _MASK64)
                _relocate(view, base, relocations, placed, address, stub_address, got_address)
            for start, end, prot in ((0, rx_end, PROT_READ | PROT_EXEC),
                                     (rx_end, ro_end, PROT_READ)):
                if end > start and lib.mprotect(base + start, end - start, prot) != 0:
                    raise ElfLoadError(f"mprotect failed: {os.strerror(ctypes.get_errno())}")
        except BaseException:
            self.close()
            raise
        self.addresses = {name: base + placed[index] + value
                          for name, (index, value) in entry_points.items()}
        self.functions = {name: NATIVE_SIGNATURE(addr) for name, addr in self.addresses.items()}

    def close(self) -> None:
        """Unmap the code; its functions must not be called afterwards."""
        base, self._base = getattr(self, "_base", None), None
        if base is not None:
            self.addresses, self.functions = {}, {}
            self._munmap(base, self._size)

    def __del__(self):
        self.close()


def check(obj: bytes, names: tuple[str, ...]) -> None:
    """Raise ElfLoadError unless `obj` passes every check ElfCode makes of the file, and
    those of what MCJIT reads besides (every section's name, every symbol, the unwind
    tables' relocations), without mapping memory or looking a symbol up: for an object
    MCJIT is to load, which trusts its input and stops the process on what these refuse
    (an alignment that is not a power of two, thread-local data, a name outside its
    table, a 32-bit relocation whose value does not fit). A 32-bit absolute address is
    taken to lie above 4 GB, where the mappings of both loaders are."""
    obj = bytes(obj)
    (sections, symbols, _, relocations, externals, stubs, got, placed, stub_offset,
     got_offset, _, _, _) = _plan(obj, names, os.sysconf("SC_PAGE_SIZE"),
                                  _unresolved, every_allocated=True)
    symbol_names = _check_names_and_symbols(obj, sections)
    for target, entries in relocations:
        if sections[target][1] == SHT_NOBITS:
            raise ElfDamagedError("a section without data has relocations")
        start = sections[target][4]
        for offset, sym, field, _, _ in entries:
            kind = symbols[sym][1] & 0xf
            if kind > STT_SECTION:
                raise ElfDamagedError(f"a relocation names a symbol of type {kind}")
            if kind != STT_SECTION and not symbol_names[sym]:
                raise ElfDamagedError("a relocation names a symbol without a name")
            # MCJIT adds what a PC-relative place holds to the addend (ElfCode does not,
            # as the ELF x86-64 ABI says): LLVM leaves every place zero
            if any(obj[start + offset:start + offset + field.size]):
                raise ElfDamagedError(f"the place of a relocation at {offset:#x} in section "
                                      f"{target} is not zero")
    address = _symbol_addresses(symbols, placed, _FAR_ABOVE_4GB, externals)
    stub_address = {sym: _FAR_ABOVE_4GB + stub_offset + _STUB_SIZE * k
                    for sym, k in stubs.items()}
    got_address = {sym: _FAR_ABOVE_4GB + got_offset + _GOT_SLOT * k for sym, k in got.items()}
    for target, offset, field, value in _relocation_values(
            _FAR_ABOVE_4GB, relocations, placed, address, stub_address, got_address):
        _pack(field, bytearray(field.size), 0, value, target, offset)


# Sections of code or addresses that a program's start runs (LLVM puts
# llvm.global_ctors in .ctors, an ordinary PROGBITS section, for the target lossc
# compiles for, and one of another priority in .ctors.NNNNN). lossc never runs them; an
# object that has one is not lossc's.
CONSTRUCTOR_SECTIONS = frozenset((b".ctors", b".dtors", b".init", b".fini", b".init_array",
                                  b".fini_array", b".preinit_array"))


def _is_constructor_section(name: bytes) -> bool:
    """Whether a section's name is one of CONSTRUCTOR_SECTIONS, or one of them with a
    priority after a dot (.ctors.65434, .init_array.101)."""
    return name in CONSTRUCTOR_SECTIONS or any(
        name.startswith(base + b".") for base in CONSTRUCTOR_SECTIONS)


# where check() takes the mapping to start: above 4 GB, as mmap places it on x86-64
# Linux, and far enough below 2**47 for the image (at most _MAX_IMAGE bytes) to fit
_FAR_ABOVE_4GB = 1 << 46


def _unresolved(name: bytes) -> int:
    """check()'s stand-in for _resolve: the name is checked, the address made up."""
    if not _symbol_name(name):
        raise ElfDamagedError("a relocation names an undefined symbol without a name")
    return _FAR_ABOVE_4GB


def _plan(obj: bytes, names: tuple[str, ...], page: int, resolve,
          every_allocated: bool = False) -> tuple:
    """Everything read from the file and checked before memory is mapped: (sections,
    symbols, entry points, relocations, externals, stubs, GOT slots, then _layout's six
    values). resolve: an undefined symbol's name -> its address. every_allocated: place
    (and so check, with their relocations) the allocated sections ElfCode skips as
    well, unwind tables and notes, which MCJIT loads."""
    sections = _section_headers(obj)
    regions = _loaded_sections(obj, sections, page, every_allocated)
    symbols, strings = _symbol_table(obj, sections)
    text = set(regions[0])
    placed_sections = text.union(*regions[1:])
    entry_points = _find_functions(obj, sections, symbols, strings, text, names)
    relocations, externals, stubs, got = _scan_relocations(
        obj, sections, placed_sections, symbols, strings, resolve)
    return (sections, symbols, entry_points, relocations, externals, stubs, got,
            *_layout(sections, regions, len(stubs), len(got), page))


# ------------------------------------------------------------ reading the file

def _section_headers(obj: bytes) -> list[tuple]:
    if len(obj) < _EHDR.size:
        raise ElfDamagedError("too short for an ELF file")
    (ident, e_type, machine, _, _, _, shoff, _, _, _, _, shentsize, shnum,
     _) = _EHDR.unpack_from(obj)
    if ident[:4] != b"\x7fELF":
        raise ElfLoadError("not an ELF file")
    if ident[4] != ELFCLASS64 or ident[5] != ELFDATA2LSB:
        raise ElfLoadError("not a little-endian 64-bit ELF file")
    if e_type != ET_REL:
        raise ElfLoadError("not a relocatable object file")
    if machine != EM_X86_64:
        raise ElfLoadError(f"not an x86-64 object file (machine {machine})")
    if shentsize != _SHDR.size or shnum == 0 or shoff + shnum * _SHDR.size > len(obj):
        raise ElfDamagedError("bad section header table")
    return list(_SHDR.iter_unpack(memoryview(obj)[shoff:shoff + shnum * _SHDR.size]))


def _file_range(obj: bytes, section: tuple) -> tuple[int, int]:
    offset, size = section[4], section[5]
    if offset + size > len(obj):
        raise ElfDamagedError("a section extends past the end of the file")
    return offset, offset + size


def _string(obj: bytes, table: tuple[int, int], offset: int) -> bytes:
    start, end = table
    first = start + offset
    stop = obj.find(b"\0", first, end) if first < end else -1
    if stop < 0:
        raise ElfDamagedError("bad string table offset")
    return obj[first:stop]


def _loaded_sections(obj: bytes, sections: list[tuple], page: int,
                     every_allocated: bool = False) -> tuple[list, list, list]:
    """The indices of the sections to load: (executable, read-only, writable)."""
    regions = ([], [], [])
    names = None
    for index, section in enumerate(sections):
        _, kind, flags, _, _, _, _, _, align, _ = section
        if not flags & SHF_ALLOC:
            continue
        names = names or _section_names(obj, sections)
        if (kind in (SHT_INIT_ARRAY, SHT_FINI_ARRAY, SHT_PREINIT_ARRAY)
                or _is_constructor_section(_string(obj, names, section[0]))):
            raise ElfLoadError("the object has constructors or destructors")
        if flags & SHF_TLS:
            raise ElfLoadError("the object has thread-local data")
        if kind not in (SHT_PROGBITS, SHT_NOBITS) and not every_allocated:
            continue        # notes, unwind tables: nothing the code reads
        if align & (align - 1):
            raise ElfLoadError(f"a section's alignment, {align}, is not a power of two")
        if align > page:
            raise ElfLoadError(f"a section's alignment, {align}, is larger than a page")
        if kind != SHT_NOBITS:
            _file_range(obj, section)
        if flags & SHF_EXECINSTR:
            if flags & SHF_WRITE:
                raise ElfLoadError("a section is both writable and executable")
            regions[0].append(index)
        else:
            regions[2 if flags & SHF_WRITE else 1].append(index)
    return regions


def _section_names(obj: bytes, sections: list[tuple]) -> tuple[int, int]:
    """The file range of the section names' string table."""
    shstrndx = _EHDR.unpack_from(obj)[13]
    if shstrndx >= len(sections) or sections[shstrndx][1] != SHT_STRTAB:
        raise ElfDamagedError("the section names have no string table")
    return _file_range(obj, sections[shstrndx])


def _check_names_and_symbols(obj: bytes, sections: list[tuple]) -> list[bytes]:
    """What MCJIT reads beyond what ElfCode does, and stops the process on if damaged:
    every section's name and extent, every relocation section's links, every symbol's
    name, section and type. Returns the symbols' names."""
    section_names = _section_names(obj, sections)
    for section in sections:
        _string(obj, section_names, section[0])
        if section[1] != SHT_NOBITS:
            _file_range(obj, section)
        # (MCJIT loads any section with relocations, allocated or not)
        if section[1] in (SHT_REL, SHT_RELA) and (
                section[7] >= len(sections) or not sections[section[7]][2] & SHF_ALLOC
                or section[6] >= len(sections) or sections[section[6]][1] != SHT_SYMTAB):
            raise ElfDamagedError("bad relocation section")
    symbols, strings = _symbol_table(obj, sections)
    names = [_string(obj, strings, sym[0]) for sym in symbols]
    for (_, info, _, index, _, _), name in zip(symbols, names):
        if index >= len(sections) and index != SHN_ABS:
            raise ElfDamagedError(f"a symbol lies in section {index}, which does not exist")
        if info & 0xf > STT_FILE:
            raise ElfDamagedError(f"a symbol of unsupported type {info & 0xf}")
    # MCJIT finds the symbol a relocation names by its name, not its index, unless it
    # is a section's: each such name must be one symbol's
    named = [name for sym, name in zip(symbols, names)
             if sym[1] & 0xf not in (STT_SECTION, STT_FILE) and name]
    if len(set(named)) != len(named):
        raise ElfDamagedError("two symbols have the same name")
    return names


def _symbol_table(obj: bytes, sections: list[tuple]) -> tuple[list, tuple[int, int]]:
    """The symbols, and where their names are."""
    tables = [s for s in sections if s[1] == SHT_SYMTAB]
    if not tables:
        return [], (0, 0)
    if len(tables) > 1:
        raise ElfLoadError("more than one symbol table")
    table = tables[0]
    start, end = _file_range(obj, table)
    if table[9] != _SYM.size or (end - start) % _SYM.size:
        raise ElfDamagedError("bad symbol table")
    link = table[6]
    if link >= len(sections) or sections[link][1] != SHT_STRTAB:
        raise ElfDamagedError("the symbol table has no string table")
    symbols = list(_SYM.iter_unpack(memoryview(obj)[start:end]))
    if SHN_COMMON in [sym[3] for sym in symbols]:
        raise ElfLoadError("common symbols are not supported")
    return symbols, _file_range(obj, sections[link])


def _find_functions(obj, sections, symbols, strings, text, names) -> dict[str, tuple]:
    """name -> (section index, offset) of each requested global function."""
    wanted = {name.encode(): name for name in names}
    found = {}
    for name_offset, info, _, index, value, _ in symbols:
        if info >> 4 != STB_LOCAL and info & 0xf == STT_FUNC and index in text:
            name = wanted.get(_string(obj, strings, name_offset))
            if name is not None:
                if value >= sections[index][5]:
                    raise ElfDamagedError(f"function {name} lies outside its section")
                found[name] = (index, value)
    for name in names:
        if name not in found:
            raise ElfLoadError(f"the object has no function {name}")
    return found


def _scan_relocations(obj, sections, placed_sections, symbols, strings, resolve):
    """Check every relocation of a loaded section, and resolve (with `resolve`) the
    external symbols they name. Returns ([(section index, [(offset, symbol, field, computation, addend)])],
    {external symbol: address}, {symbol: stub number}, {symbol: GOT slot number})."""
    relocations, externals, stubs, got = [], {}, {}, {}
    source = memoryview(obj)
    section_of = [sym[3] for sym in symbols]
    n_symbols = len(symbols)
    kinds = _RELOCATIONS
    for rela in sections:
        _, kind, _, _, _, _, link, target, _, entsize = rela
        if kind == SHT_REL and target in placed_sections:
            raise ElfLoadError("REL relocations are not supported on x86-64")
        if kind != SHT_RELA or target not in placed_sections:
            continue    # relocations of a section not loaded (unwind tables, debug info)
        start, end = _file_range(obj, rela)
        if (entsize != _RELA.size or (end - start) % _RELA.size or link >= len(sections)
                or sections[link][1] != SHT_SYMTAB):
            raise ElfDamagedError("bad relocation section")
        limit = sections[target][5]
        entries = []
        for offset, info, addend in _RELA.iter_unpack(source[start:end]):
            sym = info >> 32
            field, how = kinds.get(info & 0xffffffff, (None, None))
            if field is None:
                raise ElfDamagedError(f"unsupported relocation type {info & 0xffffffff}")
            if offset + field.size > limit:
                raise ElfDamagedError("a relocation lies outside its section")
            if sym >= n_symbols:
                raise ElfDamagedError("a relocation names a symbol that does not exist")
            index = section_of[sym]
            if index not in placed_sections:
                if index == SHN_UNDEF:
                    if sym not in externals:
                        externals[sym] = resolve(_string(obj, strings, symbols[sym][0]))
                    if how == _BRANCH and sym not in stubs:
                        stubs[sym] = len(stubs)
                elif index != SHN_ABS:
                    raise ElfDamagedError("a relocation names a symbol in a section not loaded")
            if how == _GOT and sym not in got:
                got[sym] = len(got)
            entries.append((offset, sym, field, how, addend))
        relocations.append((target, entries))
    return relocations, externals, stubs, got


def _allowed(text: str) -> bool:
    from lossc.codegen.externals import ALLOWED
    return text in ALLOWED


def _symbol_name(name: bytes) -> str:
    try:
        return name.decode()
    except UnicodeDecodeError:
        raise ElfDamagedError(f"bad symbol name {name!r}") from None


def _resolve(name: bytes) -> int:
    text = _symbol_name(name)
    if text not in MEMORY_FUNCTIONS and not _allowed(text):
        raise ElfLoadError(f"the object calls {text!r}, which lossc's code generator "
                           "never calls")
    address = _libc().lookup(text) if text else None
    if address is None:
        raise ElfLoadError(f"undefined symbol {text!r} not found in the process or libm")
    return address


# ------------------------------------------------------------ placing and linking

def _align(offset: int, alignment: int) -> int:
    return -(-offset // alignment) * alignment if alignment > 1 else offset


def _layout(sections, regions, n_stubs: int, n_got: int, page: int):
    """Offsets in the mapping: the code and the stubs, then (from a page boundary)
    read-only data and the GOT, then writable data. Returns ({section index: offset},
    stub table offset, GOT offset, end of the code pages, end of the read-only pages,
    mapping size)."""
    placed = {}

    def place(indices, offset):
        for index in indices:
            offset = _align(offset, sections[index][8])
            placed[index] = offset
            offset += sections[index][5]
        return offset

    executable, read_only, writable = regions
    stub_offset = _align(place(executable, 0), _STUB_SIZE)
    rx_end = _align(stub_offset + _STUB_SIZE * n_stubs, page)
    got_offset = _align(place(read_only, rx_end), _GOT_SLOT)
    ro_end = _align(got_offset + _GOT_SLOT * n_got, page)
    size = _align(place(writable, ro_end), page)
    if size == 0:
        raise ElfLoadError("the object has nothing to load")
    if size > _MAX_IMAGE:
        raise ElfDamagedError(f"the object needs {size} bytes of memory, more than "
                           "32-bit PC-relative code reaches")
    return placed, stub_offset, got_offset, rx_end, ro_end, size


def _symbol_addresses(symbols, placed, base: int, externals: dict) -> list:
    """Each symbol's address (None for one in a section not loaded)."""
    address = [base + placed[index] + value if index in placed
               else value if index == SHN_ABS else None
               for _, _, _, index, value, _ in symbols]
    for sym, value in externals.items():
        address[sym] = value
    return address


def _copy_sections(view, obj: bytes, sections, placed) -> None:
    source = memoryview(obj)
    for index, at in placed.items():
        _, kind, _, _, offset, size, _, _, _, _ = sections[index]
        if kind == SHT_PROGBITS:        # NOBITS (.bss) stays zero, as the mapping starts
            view[at:at + size] = source[offset:offset + size]


def _relocate(view, base: int, relocations, placed, address, stub, got) -> None:
    """Apply the relocations; stub and got map symbols to the addresses of their stub
    and GOT slot."""
    for target, offset, field, value in _relocation_values(base, relocations, placed,
                                                           address, stub, got):
        _pack(field, view, placed[target] + offset, value, target, offset)


def _relocation_values(base: int, relocations, placed, address, stub, got):
    """(section index, offset in it, field, value) of each relocation, for a mapping at
    `base`."""
    branch = list(address)      # where a call or jump to each symbol goes
    for sym, at in stub.items():
        branch[sym] = at
    for target, entries in relocations:
        section_address = base + placed[target]
        for offset, sym, field, how, addend in entries:
            if how == _BRANCH:
                value = branch[sym] + addend - section_address - offset
            elif how == _GOT:
                value = got[sym] + addend - section_address - offset
            elif how == _PCREL:
                value = (address[sym] + addend - section_address - offset) & _MASK64
            else:
                value = address[sym] + addend
                if field is _U64:
                    value &= _MASK64
            yield target, offset, field, value


def _pack(field: struct.Struct, view, at: int, value: int, target: int, offset: int) -> None:
    try:
        field.pack_into(view, at, value)
    except struct.error:
        raise ElfDamagedError(f"a relocation at {offset:#x} in section {target} overflows: "
                              f"{value:#x} does not fit 32 bits") from None


# ------------------------------------------------------------ the C library

class _Libc:
    """The C library functions the loader calls, and symbol lookup in the process."""

    def __init__(self):
        self.process = ctypes.CDLL(None, use_errno=True)
        self.mmap = self.process.mmap
        self.mmap.restype = ctypes.c_void_p
        self.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_int64)
        self.mprotect = self.process.mprotect
        self.mprotect.restype = ctypes.c_int
        self.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        self.munmap = self.process.munmap
        self.munmap.restype = ctypes.c_int
        self.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        self._libm = None     # loaded when a symbol is not in the process

    def lookup(self, name: str):
        """A symbol's address in the process (dlsym), else in libm; None if neither."""
        address = _dlsym(self.process, name)
        if address is None:
            if self._libm is None:
                self._libm = _load_libm()
            if self._libm:
                address = _dlsym(self._libm, name)
        return address


def _dlsym(library: ctypes.CDLL, name: str):
    try:
        return ctypes.cast(library[name], ctypes.c_void_p).value
    except AttributeError:
        return None


def _load_libm():
    """libm, or False if it cannot be found."""
    try:
        # ctypes.util.find_library runs a subprocess: the usual name first
        return ctypes.CDLL("libm.so.6")
    except OSError:
        from ctypes.util import find_library
        path = find_library("m")
        try:
            return ctypes.CDLL(path) if path else False
        except OSError:
            return False


_libc_functions = None


def _libc() -> _Libc:
    global _libc_functions
    if _libc_functions is None:
        _libc_functions = _Libc()
    return _libc_functions
