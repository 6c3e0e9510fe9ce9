"""Checks a command makes of every input it will read before it starts any work.

A typo in a path or a device must cost a second, not the hours of a final fit or an embedding
run that would come before the file is first opened. Each function here raises the project's
one-paragraph :class:`~hapexpr.errors.InputError` (naming the file and the fix) and writes
nothing; the stages call them at their top, before the first fit, embedding or write.
"""

from __future__ import annotations

import os
from pathlib import Path

from hapexpr.errors import InputError
from hapexpr.io.vcf import VcfReader


def output_file(path: str | Path, *, overwrite: bool, flag: str = "--out", what: str = "output file") -> Path:
    """``path`` as a file this command may write: absent (or ``overwrite``), not a directory, and
    in a folder that exists or can be made and that this user may write into; ``flag`` is the
    option that named it, ``what`` how messages call it."""
    path = Path(path)
    if path.is_dir():
        raise InputError("the output is a directory, not a file", path=path, hint=f"give a file name to {flag}")
    if path.exists() and not overwrite:
        raise InputError(
            f"the {what} already exists", path=path, hint=f"pass --overwrite to replace it, or choose another {flag}"
        )
    writable_folder(path.parent, what="the output's folder")
    return path


def writable_folder(folder: str | Path, *, what: str = "the folder") -> Path:
    """``folder`` when it is, or can be made, a folder this user may write into."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{what} cannot be made: {existing} is a file", path=folder)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{what} is not writable", path=existing, hint="choose a folder you may write into")
    return folder


def new_people_vcf(study, path: str | Path, *, phased: bool) -> VcfReader:
    """The new people's VCF opened (container, index, header and samples checked) and holding the
    contig of at least one study gene; ``phased``: whether its genotypes must be phased (the
    records themselves are checked as each gene is read)."""
    reader = VcfReader(path, allow_unphased=not phased)
    chroms = sorted(set(study.genes["chrom"]))
    if not any(reader.resolve(c) is not None for c in chroms):
        raise InputError(
            f"the VCF has no contig of any study gene ({', '.join(chroms)})",
            path=path,
            hint="use a VCF of the same genome build and chromosomes as the study",
        )
    return reader


def torch_device(device: str, *, flag: str = "--device") -> str:
    """A torch device string checked before any model is built (a CUDA device must exist);
    ``auto`` means CUDA when present, else CPU. Returns the device to use."""
    if device == "cpu":
        return device
    import torch  # only a device other than the CPU pays for the import here

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device {device!r}", hint="use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"{flag} {device} was asked for but this machine has no CUDA GPU that torch can use",
            hint=f"use {flag} cpu (or auto)",
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(
            f"{flag} {device}: this machine has {torch.cuda.device_count()} CUDA device(s)",
            hint="use cuda:0 .. cuda:N-1",
        )
    return str(dev)
