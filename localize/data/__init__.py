"""Dataset readers and synthetic writers in the real datasets' layouts.

- ``aachen``: Aachen Day-Night v1.1 reader + synthetic street-scene writer;
- ``roxford``: revisitop (ROxford5k / RParis6k) reader; ``roxford_synth``: synthetic revisitop;
- ``scene``: the one renderer (textured planes + z-buffer), cameras, the street-scene world;
- ``strecha``: Strecha multi-view sets.
"""
