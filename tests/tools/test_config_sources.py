"""Each hyperparameter's source: the file that sets it, its own tag over the file's source line,
tailcon's default otherwise; docs/hyperparameters.md is the current rendering of every shipped
config."""

import importlib.util
import re
from pathlib import Path

from tailcon.tools.sources import hyperparameter_sources, shipped_configs

REPO = Path(__file__).resolve().parents[2]


def _by_key(path):
    return {h.key: h for h in hyperparameter_sources(path)}


def test_a_keys_own_tag_beats_its_files_source_line_and_inherited_keys_name_the_base(tmp_path):
    (tmp_path / "base.yaml").write_text("# source: [paper] table 3\nmethod:\n  name: logit_adjusted\n"
                                        "  tau: 1.0\noptim:\n  lr: 0.1\n  weight_decay: 2.0e-4\n")
    (tmp_path / "child.yaml").write_text("# source: [code] train.py\n_base_: base.yaml\n"
                                         "optim:\n  lr: 0.2        # [ASSUME] doubled for batch 256\n"
                                         "data:\n  batch_size: 256\n  num_workers: 8\n")
    h = _by_key(tmp_path / "child.yaml")
    assert (h["optim.lr"].value, h["optim.lr"].source) == (0.2, "[ASSUME] doubled for batch 256")
    assert h["data.batch_size"].source == "[code] train.py"
    assert h["optim.weight_decay"].source == "[paper] table 3" and h["optim.weight_decay"].file.endswith("base.yaml")
    assert h["method.tau"].source == "[paper] table 3"
    assert h["optim.momentum"].file is None and h["optim.momentum"].source.startswith("tailcon default")
    assert "data.num_workers" not in h  # plumbing
    assert "optim.min_lr_ratio" not in h  # irrelevant to a cosine schedule without a floor


def test_a_base_written_for_another_method_lends_no_method_keys(tmp_path):
    (tmp_path / "base.yaml").write_text("# source: A\nmethod:\n  name: logit_adjusted\n  tau: 2.0\n")
    (tmp_path / "child.yaml").write_text("# source: B\n_base_: base.yaml\nmethod:\n  name: ce\n")
    h = _by_key(tmp_path / "child.yaml")
    assert "method.tau" not in h and h["method.name"].source == "B"


def test_every_shipped_config_names_a_source_for_every_key_it_sets():
    names = [name for name, _ in shipped_configs()]
    assert "cifar10_lt/bcl" in names and "imagenet_lt/dscl" in names and len(names) >= 60
    for _, path in shipped_configs():
        for h in hyperparameter_sources(path):
            assert h.source and h.source != "(no source recorded)", (path, h.key)
    k_neg = _by_key(dict(shipped_configs())["cifar10_lt/rescom"])["method.k_neg"]
    assert k_neg.value == 36 and k_neg.source.startswith("[ASSUME]") and k_neg.file == "cifar10_lt/rescom.yaml"


def test_docs_hyperparameters_md_is_current():
    spec = importlib.util.spec_from_file_location("hyperparameters_doc", REPO / "docs" / "hyperparameters.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (REPO / "docs" / "hyperparameters.md").read_text() == module.render(), \
        "docs/hyperparameters.md is stale: run python docs/hyperparameters.py"


def test_docs_reproduction_md_is_current_and_lists_every_paper_figure():
    spec = importlib.util.spec_from_file_location("reproduction_doc", REPO / "docs" / "reproduction.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = module.render()
    assert (REPO / "docs" / "reproduction.md").read_text() == page, \
        "docs/reproduction.md is stale: run python docs/reproduction.py"
    from tailcon import config, resolution

    with_figures = [n for n in config.shipped_config_names() if "/" in n and resolution.resolve(n)["paper"]["top1"] is not None]
    assert len(with_figures) > 20 and all(f"| `{n}` |" in page for n in with_figures)


OPENABLE = re.compile(r"arXiv:\d{4}\.\d{4,5}|[\w.-]+/[\w.-]+@[0-9a-f]{7}|\b[\w/]+\.yaml\b")


def test_every_source_a_shipped_config_names_is_one_a_user_can_open():
    """A paper (its arXiv number), the authors' repository at a commit, or another shipped config:
    never a document that does not ship (the specification tailcon was written from)."""
    for name, path in shipped_configs():
        text = path.read_text()
        assert "spec" not in text.replace("inspect", ""), f"{name} cites the unshipped specification"
        for line in text.splitlines():
            if line.startswith("# source:"):
                assert OPENABLE.search(line), f"{name}: no source a user can open in {line!r}"


def test_the_user_documents_cite_no_unshipped_specification():
    for doc in ("README.md", "docs/hyperparameters.md", "docs/methods.md", "docs/reproduction.md",
                "docs/architecture.md"):
        text = (REPO / doc).read_text()
        assert not re.search(r"\bspec\b|shared/spec", text), f"{doc} cites the unshipped specification"


def test_the_source_tags_have_one_legend_where_they_are_printed(capsys):
    from tailcon.cli import main
    from tailcon.tools.sources import TAG_LEGEND

    assert main(["config", "cifar10_lt/bcl", "--sources"]) == 0
    assert TAG_LEGEND.replace("**", "") in capsys.readouterr().out
    assert TAG_LEGEND in (REPO / "docs" / "hyperparameters.md").read_text()
    assert TAG_LEGEND in (REPO / "tailcon" / "configs" / "README.md").read_text()
    tags = set()
    for path in (REPO / "tailcon" / "configs").rglob("*.yaml"):
        tags |= set(re.findall(r"\[([A-Za-z][A-Za-z0-9-]*)[\] ]", path.read_text()))
    for tag in tags - {"recalled from the paper"}:
        assert f"[{tag}" in TAG_LEGEND, f"the tag [{tag}] used by a config is not in the legend"
