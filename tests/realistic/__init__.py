"""Realistic microscope recordings of micron-sized beads (bright-field and fluorescence) for tests.

See :mod:`realistic.recording`. Independent of :mod:`exonta.simulate` (the NTA light-sheet
simulator) on purpose: these recordings look like what users film on an ordinary microscope.
"""
