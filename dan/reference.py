"""The paper's reported numbers, kept by the project with their source, for the reproduction summary.

Source: Nam, Ha, Kim, "Dual Attention Networks for Multimodal Reasoning and Matching", CVPR 2017
(arXiv:1611.00471), Table 1 (VQA v1.0) and Table 3 (Flickr30K). Entries flagged ``uncertain`` were not
confirmed against the paper's own text when this study was set up; the book shows the flag.
"""

from __future__ import annotations

SOURCE = "Nam, Ha, Kim. Dual Attention Networks for Multimodal Reasoning and Matching. CVPR 2017, arXiv:1611.00471"

# VQA v1.0 open-ended accuracy (%), official metric.
VQA = [
    {"model": "r-DAN (ResNet-152)", "split": "test-dev", "yes/no": 83.0, "number": 39.1, "other": 53.9,
     "overall": 64.3, "uncertain": False},
    {"model": "r-DAN (ResNet-152)", "split": "test-std", "yes/no": 82.8, "number": 38.1, "other": 54.0,
     "overall": 64.2, "uncertain": False},
    {"model": "r-DAN (VGG-19)", "split": "test-dev", "yes/no": 82.1, "number": 38.2, "other": 50.2,
     "overall": 62.0, "uncertain": True},
]

# Baselines in the same table, test-dev overall (%); flagged uncertain in PAPER.md.
VQA_BASELINES = {"SAN": 58.7, "DMN+": 60.3, "MRN": 61.7, "HieCoAtt": 61.8, "MCB": 64.2}

# Flickr30K 1,000 test images x 5 captions: Recall@K (%) and median rank.
FLICKR30K = [
    {"model": "m-DAN (ResNet-152)", "i2t": {"r1": 55.0, "r5": 81.8, "r10": 89.0, "medr": 1.0},
     "t2i": {"r1": 39.4, "r5": 69.2, "r10": 79.1, "medr": 2.0}, "uncertain": False},
    {"model": "m-DAN (VGG-19)", "i2t": {"r1": 41.4, "r5": 73.5, "r10": 82.5, "medr": None},
     "t2i": {"r1": 31.8, "r5": 61.7, "r10": 72.5, "medr": None}, "uncertain": True},
    {"model": "independent TensorFlow re-implementation", "i2t": {"r1": 54.4, "r5": 82.4, "r10": 89.9, "medr": None},
     "t2i": {"r1": 39.8, "r5": 71.4, "r10": 80.9, "medr": None}, "uncertain": False,
     "source": "re-implementation (not the paper)"},
]

# The paper's hyperparameters (one setting for both models); dan.config.PAPER uses these.
HYPERPARAMETERS = {"K": 2, "hidden": 512, "optimizer": "SGD lr 0.1, momentum 0.9, weight decay 5e-4",
                   "schedule": "60 epochs, lr 0.01 after epoch 30", "dropout": 0.5,
                   "gradient clipping": "0.1 (by value or norm: uncertain)", "batch": 128, "answers": 2000,
                   "margin": 100}

# What a run on the real data needs, for the rows this study cannot run offline.
REAL_COMMANDS = {
    "vqa": "python data/download.py --only vqa1 coco && python -m dan.features --data data/real "
           "--out results/real/features --profile real && python -m dan.train --task vqa --profile real "
           "--data data/real --train-split train2014 --val-split val2014",
    "matching": "python data/download.py --only karpathy flickr30k && (place Flickr30K images in "
                "data/real/images/flickr30k-images) && python -m dan.features --data data/real "
                "--out results/real/features --profile real && python -m dan.train --task matching --profile real "
                "--data data/real --captions-file captions/dataset_flickr30k.json",
}
