"""icrl: in-context imitation learning for NetHack, MiniHack and Procgen."""
