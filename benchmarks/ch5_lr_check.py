"""Chapter 5: is each LeNet near its own best learning rate? A coarse check, run offline.

d2l trains the sigmoid LeNet without BN at lr 0.9 and with BN at lr 1.0 (batch 256, 10 epochs,
Xavier init from ``train_ch6``). Chapter 5 uses the same choices. This script trains each network
for the full 10 epochs at a few learning rates around d2l's, one seed each, on one CPU thread, and
prints the final train accuracy and test accuracy (for the BN net with running statistics and with
exact population statistics of the final weights, measured on all 60,000 training images).

    python benchmarks/ch5_lr_check.py > benchmarks/ch5_lr_check.txt
    python benchmarks/ch5_lr_check.py none:5.0 torch:3.0     # only these runs, no header

It takes about 2 minutes per run on one core. Float32 training at these rates is chaotic across
CPUs, so another machine gives numbers that differ in the 2nd-3rd decimal.
"""
import sys
import time

from bncourse.data import fashion_mnist_loaders, load_fashion_mnist
from bncourse.models import lenet
from bncourse.repro import seed_everything
from bncourse.swing import sequential_population_statistics
from bncourse.train import evaluate, train

RUNS = [(None, 0.3), (None, 0.9), (None, 1.8), (None, 3.0), (None, 5.0), ("torch", 0.3), ("torch", 1.0), ("torch", 3.0)]
EPOCHS, SEED = 10, 0

if __name__ == "__main__":
    if len(sys.argv) > 1:
        RUNS = [(None if net == "none" else net, float(lr)) for net, lr in (a.split(":") for a in sys.argv[1:])]
    x_train, _ = load_fashion_mnist("train")
    if len(sys.argv) == 1:
        print(f"{'net':6s} {'lr':>4s} {'train acc':>9s} {'test (running)':>14s} {'test (exact)':>12s} "
              f"{'test acc per epoch (running)':s}")
    for bn, lr in RUNS:
        seed_everything(SEED)
        train_loader, test_loader = fashion_mnist_loaders(256, seed=SEED)
        model = lenet(bn=bn, init="xavier")
        start = time.process_time()
        hist = train(model, train_loader, epochs=EPOCHS, lr=lr, test_loader=test_loader, progress=False)
        exact = "-"
        if bn is not None:
            exact = f"{evaluate(sequential_population_statistics(model, x_train), test_loader)[1]:.3f}"
        per_epoch = " ".join(f"{a:.2f}" for a in hist.epoch_test_acc)
        print(f"{'BN' if bn else 'no BN':6s} {lr:4.1f} {hist.epoch_train_acc[-1]:9.3f} {hist.epoch_test_acc[-1]:14.3f} "
              f"{exact:>12s} {per_epoch}   ({time.process_time() - start:.0f} s CPU)", flush=True)
