"""Safe loading: nothing hapexpr reads can run code, and no user string reaches a shell.

The source checks walk the syntax tree of every module under src/hapexpr (comments and
docstrings do not count), and each rule is first shown to catch a violation in a snippet, so a
rule that silently matches nothing fails too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from hapexpr.errors import HapexprError, InputError

SRC = Path(__file__).resolve().parents[1] / "src" / "hapexpr"
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _dotted(node: ast.AST) -> str:
    """``torch.load`` for ``torch.load(...)``'s func; ``?.eval`` for ``f().eval``; '' otherwise."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base or '?'}.{node.attr}"
    return ""


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def violations(source: str, filename: str = "<snippet>") -> list[str]:
    """Every unsafe construct in ``source``, as ``file:line: what``."""
    tree = ast.parse(source)
    found = []
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]

    def enclosing_text(node) -> str:
        inner = [f for f in functions if f.lineno <= node.lineno <= (f.end_lineno or f.lineno)]
        f = min(inner, key=lambda f: (f.end_lineno or f.lineno) - f.lineno) if inner else tree
        return ast.unparse(f)

    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in UNSAFE_MODULES:
                    found.append(f"{where}: imports {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in UNSAFE_MODULES:
                found.append(f"{where}: imports from {node.module}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            short = name.rsplit(".", 1)[-1]
            if name in ("torch.load",) and not _is_true(_kw(node, "weights_only")):
                found.append(f"{where}: torch.load without weights_only=True")
            if name in ("torch.save",):
                found.append(f"{where}: torch.save (checkpoints are safetensors + JSON)")
            if short in ("read_pickle", "to_pickle"):
                found.append(f"{where}: {short}")
            if short == "load" and _is_true(_kw(node, "allow_pickle")):
                found.append(f"{where}: np.load(allow_pickle=True)")
            if _is_true(_kw(node, "trust_remote_code")):
                found.append(f"{where}: trust_remote_code=True literal (only the user may ask for it)")
            if _is_true(_kw(node, "shell")):
                found.append(f"{where}: shell=True")
            if name in (
                "os.system",
                "os.popen",
                "subprocess.getoutput",
                "subprocess.getstatusoutput",
                "commands.getoutput",
            ):
                found.append(f"{where}: {name}")
            if name in ("eval", "exec", "compile"):
                found.append(f"{where}: {name}()")
            if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all"):
                found.append(f"{where}: {name} (use yaml.safe_load)")
            if short == "from_pretrained":
                text = enclosing_text(node)
                if "local_files_only=True" not in text and "'local_files_only': True" not in text:
                    found.append(f"{where}: from_pretrained without local_files_only=True (nothing is downloaded)")
    return found


BAD_SNIPPETS = [
    "import pickle",
    "from joblib import load",
    "import torch\ntorch.load('x.pt')",
    "import torch\ntorch.load('x.pt', weights_only=False)",
    "import torch\ntorch.save(m, 'x.pt')",
    "import pandas as pd\npd.read_pickle('x')",
    "import numpy as np\nnp.load('x.npz', allow_pickle=True)",
    "m = AutoModel.from_pretrained('x', trust_remote_code=True, local_files_only=True)",
    "def f():\n    return AutoModel.from_pretrained('x')",
    "import subprocess\nsubprocess.run('ls ' + user, shell=True)",
    "import os\nos.system('bcftools index ' + path)",
    "eval(user_text)",
    "x = compile(text, 'f', 'exec')",
    "import yaml\nyaml.load(text)",
]


@pytest.mark.parametrize("snippet", BAD_SNIPPETS)
def test_each_rule_catches_its_violation(snippet):
    assert violations(snippet), snippet


def test_rules_accept_the_safe_forms():
    ok = (
        "import torch, yaml, numpy as np\n"
        "torch.load('x.pt', map_location='cpu', weights_only=True)\n"
        "np.load('x.npz', allow_pickle=False)\n"
        "yaml.safe_load(text)\n"
        "def f(trust):\n"
        "    kwargs = {'local_files_only': True, 'trust_remote_code': trust}\n"
        "    return AutoModel.from_pretrained('x', **kwargs)\n"
        "model.eval()\n"
    )
    assert violations(ok) == []


def test_source_has_no_unsafe_loading_or_shell():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    found = [v for f in files for v in violations(f.read_text(), str(f.relative_to(SRC.parent)))]
    assert found == [], "\n".join(found)


# --- config paths: resolved against the config's folder and checked ------------------------------


def _config(folder: Path, **prepare) -> Path:
    lines = [
        f"  {k}: {v}"
        for k, v in {"vcf": "v.vcf.gz", "fasta": "r.fa", "genes": "g.gtf", "expression": "e.bed.gz", **prepare}.items()
    ]
    path = folder / "config.yaml"
    path.write_text("study: studies/s\nprepare:\n" + "\n".join(lines) + "\nembed: false\nreport: false\n")
    return path


@pytest.fixture()
def config_dir(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    for name in ["v.vcf.gz", "r.fa", "g.gtf", "e.bed.gz", "c.tsv"]:
        (folder / name).write_text("x")
    return folder


def test_config_paths_resolve_against_the_config_folder(config_dir, tmp_path, monkeypatch):
    from hapexpr.pipeline import load_config

    monkeypatch.chdir(tmp_path)  # not the config's folder
    config = load_config(_config(config_dir, covariates="./c.tsv"))
    assert config.prepare.vcf == str(config_dir / "v.vcf.gz")
    assert config.prepare.covariates == str(config_dir / "c.tsv")
    assert config.study == str(config_dir / "studies" / "s")


@pytest.mark.parametrize("key", ["vcf", "fasta", "genes", "expression", "covariates"])
def test_config_missing_file_names_the_key(config_dir, key):
    from hapexpr.pipeline import load_config

    path = _config(config_dir, **{key: "../elsewhere/missing.file"})
    with pytest.raises(InputError) as err:
        load_config(path)
    text = str(err.value)
    assert err.value.record == f"prepare.{key}" and str(path) in text and "missing.file" in text


def test_config_python_tags_are_refused_and_never_run(config_dir, tmp_path):
    marker = tmp_path / "pwned"
    path = config_dir / "evil.yaml"
    path.write_text(f"study: !!python/object/apply:os.system ['touch {marker}']\nprepare: {{}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "hapexpr.cli", "run", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert str(path) in proc.stderr and "not valid YAML" in proc.stderr
    assert not marker.exists()


def test_cli_run_with_a_missing_config(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "hapexpr.cli", "run", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "nope.yaml" in proc.stderr


# --- malformed configs: always hapexpr's own error -------------------------------------------------


def test_load_config_accepts_or_raises_own_error_on_mutated_yaml(tmp_path):
    """Every line of a valid config deleted, duplicated or garbled in turn (exhaustive, not random)."""
    from hapexpr.pipeline import load_config

    for name in ["v.vcf.gz", "r.fa", "g.gtf", "e.bed.gz", "c.tsv"]:
        (tmp_path / name).write_text("x")
    lines = (
        "study: s\nprepare:\n  vcf: v.vcf.gz\n  fasta: r.fa\n  genes: g.gtf\n  expression: e.bed.gz\n"
        "  covariates: c.tsv\n  window: 2000\nembed:\n  bins: 8\nfit:\n  - elastic-net\n"
        "  - method: ridge-probe\n    seed: 3\nevaluate: true\nreport: false\n"
    ).splitlines()
    variants = []
    for i in range(len(lines)):
        variants.append(lines[:i] + lines[i + 1 :])
        variants.append(lines[:i] + [lines[i], lines[i]] + lines[i + 1 :])
        for junk in [
            "  - ",
            ": :",
            "\t",
            "[",
            "window: abc",
            "  seed: [1, 2]",
            "!!python/object:os.system x",
            "fit: 3",
            "  window: abc",
            "  - method: elastic-net\n    maf: high",
        ]:
            variants.append(lines[:i] + [junk] + lines[i + 1 :])
    path = tmp_path / "config.yaml"
    accepted = 0
    for v in variants:
        path.write_text("\n".join(v) + "\n")
        try:
            load_config(path)
            accepted += 1
        except HapexprError as exc:
            assert Path(exc.path).name == "config.yaml", exc
    assert 0 < accepted < len(variants)


def test_config_fit_not_a_list_is_an_input_error(tmp_path):
    from hapexpr.pipeline import load_config

    path = _plain_config(tmp_path, "fit: 3\n")
    with pytest.raises(InputError, match="fit"):
        load_config(path)


@pytest.mark.parametrize("line", ["  window: abc", "  folds: [2]"])
def test_config_value_of_wrong_type_is_an_input_error(tmp_path, line):
    from hapexpr.pipeline import load_config

    path = _plain_config(tmp_path, extra_prepare=line + "\n")
    with pytest.raises(InputError, match=line.split(":")[0].strip()):
        load_config(path)


def _plain_config(tmp_path: Path, extra: str = "", extra_prepare: str = "") -> Path:
    for name in ["v.vcf.gz", "r.fa", "g.gtf", "e.bed.gz"]:
        (tmp_path / name).write_text("x")
    path = tmp_path / "config.yaml"
    path.write_text(
        "study: s\nprepare:\n  vcf: v.vcf.gz\n  fasta: r.fa\n  genes: g.gtf\n  expression: e.bed.gz\n"
        + extra_prepare
        + "embed: false\nreport: false\n"
        + extra
    )
    return path
