#!/usr/bin/env python3
"""Builds the jar folder of the GPU check's kit (bin/spark-tp gpu-check --prepare DIR).

The GPU machine has no Java and nothing can be fetched there, and what travels to it is limited (64 MiB with the
repository), so the kit carries only what the GPU run loads: whole jars for the small libraries it uses throughout
(JavaCPP and its OpenBLAS preset, JUnit, AssertJ, Jackson, SLF4J; of the CUDA preset's JNI glue only cudart, cublas,
nccl and nvrtc; no Log4j), and for every other jar only the classes
that a census run on the CPU loaded (java -Xlog:class+load, the CPU side of the same tests and benchmark) plus its
resources but no native libraries (oneDNN is left out: the CPU backend then runs bf16 without it). The kit then runs the census itself on its own runtime, which proves it holds what those paths need.

  gpu_kit.py --classpath CP_FILE --log LOG [--log LOG ...] --out DIR/lib
"""
import argparse
import os
import re
import sys
import zipfile

WHOLE = re.compile(r"/(javacpp|openblas|cuda|junit-|junit-platform|opentest4j|apiguardian|assertj|jackson-|slf4j-)"
                   r"[^/]*\.jar$")
# left out: Log4j (SLF4J then logs nothing; Log4j would need java.desktop in the runtime, 8 MB more)
SKIP = re.compile(r"/log4j-[^/]*\.jar$")
# of JavaCPP's CUDA glue, the libraries spark-tp calls (cuBLASLt is in the cublas preset)
CUDA_NATIVES = re.compile(r"/cuda-[^/]*-linux-x86_64\.jar$")
CUDA_KEEP = re.compile(r"/libjni(cudart|cublas|nccl|nvrtc)\.so$")
SOURCE = re.compile(r"\[class,load\] (\S+) source: (?:jar:)?file:(\S+?\.jar)")
SIGNATURE = re.compile(r"META-INF/[^/]*\.(SF|RSA|DSA|EC)$")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--classpath", required=True, help="file holding the test class path (':'-separated)")
    ap.add_argument("--log", action="append", required=True, help="-Xlog:class+load output of a census run")
    ap.add_argument("--out", required=True, help="the kit's lib folder")
    a = ap.parse_args()
    jars = [j for j in open(a.classpath).read().strip().split(":") if j.endswith(".jar")]
    loaded = {}
    for log in a.log:
        for line in open(log, errors="replace"):
            m = SOURCE.search(line)
            if m:
                loaded.setdefault(os.path.realpath(m.group(2).split("!")[0]), set()).add(m.group(1))
    os.makedirs(a.out, exist_ok=True)
    whole = pruned = 0
    for j in jars:
        real = os.path.realpath(j)
        name = os.path.basename(j)
        if SKIP.search(j):
            continue
        if CUDA_NATIVES.search(j):
            out = os.path.join(a.out, name)
            with zipfile.ZipFile(j) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
                for e in zin.infolist():
                    if e.filename.endswith(".so") and not CUDA_KEEP.search("/" + e.filename):
                        continue
                    zout.writestr(e, zin.read(e.filename))
            whole += os.path.getsize(out)
            continue
        if WHOLE.search(j):
            with open(j, "rb") as src, open(os.path.join(a.out, name), "wb") as dst:
                dst.write(src.read())
            whole += os.path.getsize(j)
            continue
        classes = loaded.get(real)
        if not classes:
            continue
        wanted = {c.replace(".", "/") + ".class" for c in classes}
        out = os.path.join(a.out, "pruned-" + name)
        with zipfile.ZipFile(j) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
            for e in zin.infolist():
                n = e.filename
                if n.endswith("/") or SIGNATURE.search(n):
                    continue
                if n.endswith(".class") and n not in wanted:
                    continue
                if re.search(r"\.(so|so\.\d+|dll|dylib|jnilib)$", n):
                    continue  # natives of a library the GPU run does not load (oneDNN, RocksDB, ...)
                zout.writestr(e, zin.read(n))
        pruned += os.path.getsize(out)
    print("gpu_kit: %d whole jars (%.1f MB), %d pruned jars (%.1f MB) from %d census lines' jars" % (
        sum(1 for j in jars if WHOLE.search(j)), whole / 1e6,
        sum(1 for f in os.listdir(a.out) if f.startswith("pruned-")), pruned / 1e6, len(loaded)))


if __name__ == "__main__":
    sys.exit(main())
