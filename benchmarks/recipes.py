"""The CPU recipes the benchmarks share (``--set`` overrides on top of the offline default's data).

``mlp``: the offline default's recipe (``dsink.pipeline.CPU_RECIPE``): MLP 784-256-256-10, Adam 1e-3, 15 epochs,
batch 128, no augmentation, on the full long-tailed Fashion-MNIST training set (n_max 6000).

``cnn``: the paper's regime scaled to two CPU cores: a small CNN (width 16) with on-device augmentation
(random crop, no flips), SGD with momentum and a cosine schedule, 30 epochs - long enough to memorise noisy
labels - on a subsample with n_max 1200 (about 2,700 training images at rho = 100), so that one run takes
about a minute here.
"""

MLP = ["model.name=mlp", "optim.optimizer=adam", "optim.lr=0.001", "optim.weight_decay=0",
       "optim.schedule=constant", "optim.batch_size=128", "train.augment=false", "optim.epochs=15"]
CNN = ["model.name=small_cnn", "model.width=16", "optim.optimizer=sgd", "optim.lr=0.05", "optim.momentum=0.9",
       "optim.weight_decay=5e-4", "optim.schedule=cosine", "optim.batch_size=128", "train.augment=true",
       "train.hflip=false", "optim.epochs=30", "data.n_max=1200"]
RECIPES = {"mlp": MLP, "cnn": CNN}
