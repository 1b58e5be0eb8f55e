"""The contract shared by training and serving: DNA tokens, metadata encoding and the model card.

Training writes artifacts in this format and the service reads them; neither imports the other.
This package depends on numpy only, so the service never pulls training code in at run time.
"""
