#!/usr/bin/env python3
"""Build a cxrgan HDF5 dataset (docs/dataset-format.md) from NIH ChestX-ray14 images or class folders."""

from cxrgan import cli
from cxrgan.data.ingest import IngestConfig, build_dataset


def make_hdf5(cfg: IngestConfig, call_args: dict):
    """Build a dataset file: patient-level train/val/test splits of 8-bit grayscale images.

    Sources (found under --src): (a) the NIH release as unpacked, images anywhere below, with
    Data_Entry_2017*.csv(.gz) in --src or given by --csv; (b) the official images_0XX.tar.gz archives, read in
    place without extracting; (c) class folders SRC/<class>/*.png (labels from folder names, or from --csv).
    Class rule: 1 = "Finding Labels" contains --finding (others may co-occur), 0 = exactly "No Finding".
    Undecodable images and csv rows without a file are skipped and listed in OUT's .report.json.

    Args:
        src: folder with the images, archives or class folders.
        out: the HDF5 file to write (written to a temp file, renamed when complete).
        csv: the Data_Entry csv; default: Data_Entry_2017*.csv(.gz) found in --src.
        size: output side in pixels, a power of two (default 256).
        seed: seed for the patient split, per-class cap and balancing.
        balance: down-sample the larger class to the smaller one in each split (default on; --nobalance).
        finding: the finding of class 1 (default Infiltration).
        finding_only: class 1 only when --finding is the image's sole label.
        other_findings: keep only the images the class rule leaves out (neither exactly "No Finding" nor with
            --finding), as one class "Other findings": radiographs for training feature networks (make features);
            each keeps its Finding Labels in the findings field.
        view: PA, AP or both (default both).
        max_per_class: keep at most this many images per class (random, seeded).
        fractions: train,val,test fractions of images, split by patient (default 0.7,0.1,0.2); 0,0,1 puts every
            image in the test split (an external test set for train_resnet --test-extra; with --balance, the test
            split's classes are balanced as any split's).
        official_split: use NIH's test_list.txt as test and split train_val_list.txt by patient into train/val.
        fit: make non-square images square by centre crop (default), zero pad, or stretch.
        workers: decoding processes (default: the CPU count; 0 or 1 decodes in this process).
        overwrite: replace an existing --out.
    """
    with cli.progress_bars() as progress:
        build_dataset(cfg, call_args, progress)


main = cli.command(IngestConfig, make_hdf5)

if __name__ == "__main__":
    cli.run(main, name="make_hdf5.py")
