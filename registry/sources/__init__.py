"""Where the catalogue's adapters come from, one module per source kind (``adapters.source_kind``):

- :mod:`.folders` ``local``: folders of ``.safetensors`` files (``lorahub index PATH``)
- :mod:`.hub`     ``hub``: the LoRA repos of a Hub endpoint, read with range requests (``lorahub index --hub``)
- :mod:`.records` ``record``: metadata-only JSON Lines records, lorahub's or Civitai's (``lorahub index --records``)

Each turns what it reads into adapter drafts that the catalogue
(:class:`lorahub.registry.catalogue.Registry`) writes.
"""
