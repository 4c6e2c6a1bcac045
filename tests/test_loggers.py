"""W&B goes offline by itself when there are no credentials, and online when there are."""

from dip.loggers import wandb_credentials_present, wandb_logger


def test_no_credentials_means_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    assert not wandb_credentials_present()
    assert wandb_logger(save_dir=str(tmp_path))._wandb_init["mode"] == "offline"


def test_credentials_mean_online_unless_the_environment_says_otherwise(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "0" * 40 + "\n")
    (tmp_path / ".netrc").chmod(0o600)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_credentials_present()
    assert wandb_logger(save_dir=str(tmp_path))._wandb_init["mode"] == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_logger(save_dir=str(tmp_path))._wandb_init["mode"] == "offline"
