"""Wire-level fakes of remote APIs that cannot run on loopback (GitHub, GitLab)."""
