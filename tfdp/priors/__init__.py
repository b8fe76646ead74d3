"""Priors that cost no privacy: encoders pretrained on images from random processes (DP-RandP).

    python -m tfdp.pretrain --model=resnet20 --steps=2000 --output_dir=runs/randp
    python -m tfdp.train --model=resnet20 --init_from=runs/randp/prior ...
    python -m tfdp.train --model=resnet20 --init_from=priors/resnet20_randp \
        --linear_probe_steps=20 ...          # phase II (tfdp.training.linear_probe), then III
"""
