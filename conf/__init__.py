"""featx's packaged Hydra configs (shipped inside the wheel as ``featx.conf``)."""
