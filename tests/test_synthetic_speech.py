"""Tests for `keras_lth.data.synthetic_speech` (the espeak-ng Speech Commands tree)."""

import os

import numpy as np
import pytest

from keras_lth.data import synthetic_speech as ss
from keras_lth.data.wav import read_wav


def test_espeak_speakers_extend_the_fixed_sixteen_reproducibly():
    assert ss.espeak_speakers(16) == ss.SPEAKERS
    assert ss.espeak_speakers(5) == ss.SPEAKERS[:5]
    many = ss.espeak_speakers(40)
    assert len(many) == 40 and many[:16] == ss.SPEAKERS
    assert many == ss.espeak_speakers(40)
    assert many[16:] != ss.espeak_speakers(40, seed=1)[16:]
    for voice, speed, pitch in many[16:]:
        base, variant = voice.split("+")
        assert base in ss.VOICES and variant in ss.VARIANTS
        assert 140 <= speed <= 200 and 25 <= pitch <= 80
    assert len(set(many)) == 40


@pytest.mark.parametrize("n", [2, 0, 3.0, True])
def test_espeak_speakers_rejects_too_few(n):
    with pytest.raises(ValueError, match="`n`.*Received: n="):
        ss.espeak_speakers(n)


def test_held_out_speakers():
    assert ss.held_out_speakers(16) == ((12, 13), (14, 15))  # the tests' tree
    assert ss.held_out_speakers(3) == ((1,), (2,))
    validation, test = ss.held_out_speakers(96)
    assert validation == tuple(range(72, 84)) and test == tuple(range(84, 96))


def test_make_speech_tree_layout_and_speaker_splits(tmp_path):
    if not ss.espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    # The last speaker is slow enough that a word lasts more than 1 s.
    speakers = ss.espeak_speakers(3) + (("en-us", 40, 50),)
    split_of = ss.make_speech_tree(str(tmp_path), words=("yes", "house"), speakers=speakers)
    assert len(split_of) == 8
    by_speaker = {}
    for name, split in split_of.items():
        by_speaker.setdefault(name.split("/")[1].split("_")[0], set()).add(split)
    assert sorted(by_speaker.values(), key=sorted) == [
        {"test"},
        {"train"},
        {"train"},
        {"validation"},
    ]
    with open(tmp_path / "testing_list.txt") as f:
        assert sorted(f.read().split()) == sorted(n for n, s in split_of.items() if s == "test")
    assert ss.is_synthetic(tmp_path) and not ss.is_synthetic(tmp_path / "yes")
    assert "espeak-ng" in (tmp_path / ss.MARKER).read_text()
    assert sorted(os.listdir(tmp_path / "_background_noise_")) == [
        "README.md",
        "hum.wav",
        "white_noise.wav",
    ]
    slow = read_wav(str(tmp_path / "house" / f"{ss.speaker_id(3)}_nohash_0.wav"), 16000)
    assert len(slow) > 16000 and np.abs(slow).max() > 0.05


def test_make_speech_tree_refuses_to_write_over_other_files(tmp_path):
    # checked before espeak-ng runs: nothing of the user's is touched
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="`root`.*holds other files: nothing was written"):
        ss.make_speech_tree(str(tmp_path))
    assert os.listdir(tmp_path) == ["mine.txt"]
    with pytest.raises(ValueError, match="`root`.*a file"):
        ss.make_speech_tree(str(tmp_path / "mine.txt"))
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_script_help_and_bad_arguments_write_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        ss.main(["--help"])
    assert e.value.code == 0 and "DIR" in capsys.readouterr().out.upper()
    with pytest.raises(SystemExit) as e:
        ss.main(["tree", "2"])
    assert e.value.code == 2 and "expected an integer >= 3" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        ss.main(["tree", "many"])
    assert e.value.code == 2 and "invalid int value: 'many'" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a.wav").write_bytes(b"x")
    with pytest.raises(SystemExit) as e:
        ss.main(["full"])
    assert e.value.code == 2 and "holds other files" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["full"]
