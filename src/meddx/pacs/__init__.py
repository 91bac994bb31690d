"""`meddx pacs`: a real Orthanc on loopback and a watcher that runs models on new studies (WADO-RS in, STOW-RS out)."""
