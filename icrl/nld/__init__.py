"""The NetHack Learning Dataset (NLD-AA, NLD-NAO) into a trajectory store, through ``nle.dataset``.

``sample`` (NLD-format games recorded by NLE), ``altorg`` (alt.org-style copies for NLD-NAO),
``index`` (the ``nle.dataset`` database), ``selection`` (which games, checked before converting),
``integrity`` (bz2 checks), ``actions`` (keypress -> unified action), ``segments`` (frames into
episodes), ``convert`` (the conversion into a store), ``commands`` (``icrl nld``).
"""
