"""The continual-learning loop: reviewers' labels -> feedback dataset (`dataset`) -> drift report
(`monitor` + `dfguard.drift`) -> loop gate (`gate`) -> replay fine-tune or re-calibration (`finetune`)
-> challenger scored on the frozen suite and the feedback holdout -> promotion (`run`)."""
