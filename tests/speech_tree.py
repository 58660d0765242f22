"""The miniature spoken-word Speech Commands tree of the tests.

The tree is built by `keras_lth.data.synthetic_speech` (also used by the
speech CNN example); this module keeps the names the tests import. It takes
a few seconds.

Also a script: `python tests/speech_tree.py DIR` writes the tree to `DIR`.
"""

from keras_lth.data.synthetic_speech import (  # noqa: F401
    MARKER,
    OTHER_WORDS,
    SPEAKERS,
    TARGET_WORDS,
    espeak_available,
    held_out_speakers,
    make_speech_tree,
    resample,
    speak,
    speaker_id,
)

VALIDATION_SPEAKERS, TEST_SPEAKERS = held_out_speakers(len(SPEAKERS))

if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python tests/speech_tree.py DIR")
    split_of = make_speech_tree(sys.argv[1])
    print(f"Wrote {len(split_of)} clips to {sys.argv[1]}")
