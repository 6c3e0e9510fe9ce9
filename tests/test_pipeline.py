"""`hapexpr run CONFIG.yaml`: config validation and skipping what is complete."""

import pytest
import yaml

from hapexpr.errors import InputError
from hapexpr.pipeline import FitConfig, PrepareConfig, RunConfig, load_config, run_pipeline


def _config(tmp_path, cohort, **extra):
    data = {
        "study": "study",
        "prepare": {
            "vcf": str(cohort / "genotypes.vcf.gz"),
            "fasta": str(cohort / "reference.fa"),
            "genes": str(cohort / "genes.gtf"),
            "expression": str(cohort / "expression.bed.gz"),
            "covariates": str(cohort / "covariates.tsv"),
            "window": 2000,
        },
        "embed": False,
        "fit": ["elastic-net"],
        "report": False,
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_config_round_trip_and_relative_paths(tmp_path, tiny_cohort):
    cfg = load_config(_config(tmp_path, tiny_cohort))
    assert cfg.study == str((tmp_path / "study").resolve())
    assert cfg.fit == (FitConfig("elastic-net", {}),) and cfg.embed is None
    again = yaml.safe_load(
        RunConfig(
            study="s",
            prepare=PrepareConfig("a", "b", "c", "d"),
            fit=(FitConfig("stack", {"base": ["elastic-net", "enformer"]}),),
        ).to_yaml()
    )
    assert again["fit"] == [{"method": "stack", "base": ["elastic-net", "enformer"]}]


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"prepare": {"vcf": "missing.vcf.gz", "fasta": "x", "genes": "x", "expression": "x"}}, "prepare.vcf"),
        ({"fit": [{"method": "magic"}]}, "fit[0]"),
        ({"fit": [{"method": "elastic-net", "lambda": 3}]}, "unknown option(s) lambda in fit[0]"),
        ({"fit": [{"method": "elastic-net", "maf": "high"}]}, "`fit[0].maf` is 'high', not a float"),
        ({"colour": "blue"}, "unknown top-level key(s) colour"),
        ({"embed": {"modle": "tiny"}}, "unknown key(s) modle"),
    ],
)
def test_bad_configs_are_named(tmp_path, tiny_cohort, change, needle):
    path = _config(tmp_path, tiny_cohort, **change)
    with pytest.raises(InputError) as err:
        load_config(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_invalid_yaml(tmp_path):
    (tmp_path / "c.yaml").write_text("study: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(tmp_path / "c.yaml")


def test_run_twice_skips_completed_stages(tmp_path, tiny_cohort):
    cfg = load_config(_config(tmp_path, tiny_cohort))
    said = []
    run_pipeline(cfg, progress=False, say=said.append)
    assert (tmp_path / "study" / "metrics.tsv").exists()
    said.clear()
    run_pipeline(cfg, progress=False, say=said.append)
    assert any("already prepared" in s for s in said)
