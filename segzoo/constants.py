"""Conventions shared by every part of segzoo (see README, "Conventions")."""

#: Label value of pixels that count for nothing: padding, uncertain areas.
IGNORE_INDEX = 255

#: Class id of the background in every label mask.
BACKGROUND_ID = 0
