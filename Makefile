# Two commands for a fresh clone:
#   make demo   -> creates .venv, installs (torch==2.13.0 first), runs the synthetic Aachen demo
#   make test   -> same install, runs the test suite
PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
FEATURES ?= hardnet
SHARED ?= ../shared/data

.PHONY: install demo lint test weights weights-gpu bench bench-real clean

$(VENV)/.installed: pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VPY) -m pipelines.aachen --features $(FEATURES) --max_keypoints 2048

lint: install
	$(VPY) -m ruff check .
	$(VPY) -m ruff format --check .

test: lint
	$(VPY) -m pytest tests

# Reproduce the shipped weights (CPU-sized runs; commands are recorded in weights/*.json).
# SDB_OLD / HNDESC_OLD: the settings the shipped sdb / hndesc weights were trained with, before
# the recipes moved to the reference's (SDGMNet128 + jitter; whole-crop batches, milder geometry).
SDB_OLD := --option arch=l2net --option jitter=false
HNDESC_REDETECT_STEPS := 800
HNDESC_OLD := --option pairs_per_batch=0 --option max_per_pair=8 \
	--option 'pair_homography_scale=[0.7,1.3]' --option pair_max_rotation_deg=30
# One seeded round of hardnet / sdb (their last): a 300-step pair stage (corner jitter 0.8, 16
# sigma) from INIT with seeds 0, 1, 2, averaged (the pair soup); 150 steps on the 16-sigma real
# patch sets from that soup with REAL_SEEDS, averaged (the real soup); weights/RECIPE.pt = the
# average of the two soups. Checkpoints: outputs/train/NAME{-seed*,,-real-seed*,-real}.pt
# $(call seeded_round,RECIPE,TRAIN_ARGS,INIT,NAME,REAL_SEEDS)
define seeded_round
	for seed in 0 1 2; do $(VPY) -m pipelines.train --recipe $(1) --quick --steps 300 $(2) \
		--option init=$(3) --option data=pairs --photos outputs/photos-train --option pair_redetect=true \
		--option pair_max_keypoints=600 --option pair_homography_strength=0.8 --option pair_mr_size=16 \
		--seed $$seed --out outputs/train/$(4)-seed$$seed.pt || exit 1; done
	$(VPY) -m pipelines.train --recipe $(1) --average $(foreach k,0 1 2,outputs/train/$(4)-seed$(k).pt) \
		--out outputs/train/$(4).pt
	for seed in $(5); do $(VPY) -m pipelines.train --recipe $(1) --quick --steps 150 $(2) \
		--data datasets/phototour-real16 --train "" --option init=outputs/train/$(4).pt --seed $$seed \
		--out outputs/train/$(4)-real-seed$$seed.pt || exit 1; done
	$(VPY) -m pipelines.train --recipe $(1) --average $(foreach k,$(5),outputs/train/$(4)-real-seed$(k).pt) \
		--out outputs/train/$(4)-real.pt
	$(VPY) -m pipelines.train --recipe $(1) --average outputs/train/$(4).pt outputs/train/$(4)-real.pt \
		--out weights/$(1).pt
endef

weights: install
	# hardnet: synthetic warm start (the previous shipped run: 1000 x 64 pairs, old effective lr),
	# then real patches of Strecha entry-P10 at three resolutions (needs ../shared/data)
	$(VPY) -m pipelines.train --recipe hardnet --quick --steps 1000 --batch_size 64 --lr 1.0 \
		--option dampening=0 --out outputs/train/hardnet-synthetic-init.pt
	test -d $(SHARED)/strecha/entry-P10 || { echo "make weights: $(SHARED) not found"; exit 1; }
	for r in 800 1200 1600; do $(VPY) -m pipelines.make_patches \
		--images $(SHARED)/strecha/entry-P10/images --strecha $(SHARED)/strecha/entry-P10/gt_dense_cameras \
		--out datasets/phototour-strecha/entry-P10-r$$r --resize_max $$r || exit 1; done
	$(VPY) -m pipelines.make_patches --images $(SHARED)/strecha/fountain-P11/images \
		--strecha $(SHARED)/strecha/fountain-P11/gt_dense_cameras --out datasets/phototour-strecha-test/fountain-P11
	# the two unposed collections: pipelines.make_patches without poses runs pipelines.sfm first
	# (exhaustive pairs + incremental mapper; sequential pairs + GLOMAP for the Lund street walk);
	# datasets/phototour-real = entry-P10 (3 resolutions) + collections
	$(VPY) -m pipelines.make_patches --images $(SHARED)/collections/sceaux_castle/images \
		--out datasets/phototour-real/sceaux_castle-r1200 --resize_max 1200
	$(VPY) -m pipelines.make_patches --images $(SHARED)/collections/lund/images \
		--sfm_pairs sequential --sfm_mapper global --out datasets/phototour-real/lund-r1024 --resize_max 1024
	for r in 800 1200 1600; do ln -sfn $(abspath datasets/phototour-strecha/entry-P10-r$$r) datasets/phototour-real/entry-P10-r$$r; done
	# the same five sets cut at the extraction support, 16 sigma (fracking; hardnet's and sdb's last stages)
	for r in 800 1200 1600; do $(VPY) -m pipelines.make_patches --mr_size 16 \
		--images $(SHARED)/strecha/entry-P10/images --strecha $(SHARED)/strecha/entry-P10/gt_dense_cameras \
		--out datasets/phototour-real16/entry-P10-r$$r --resize_max $$r || exit 1; done
	$(VPY) -m pipelines.make_patches --mr_size 16 --images $(SHARED)/collections/sceaux_castle/images \
		--out datasets/phototour-real16/sceaux_castle-r1200 --resize_max 1200
	$(VPY) -m pipelines.make_patches --mr_size 16 --images $(SHARED)/collections/lund/images \
		--sfm_pairs sequential --sfm_mapper global --out datasets/phototour-real16/lund-r1024 --resize_max 1024
	$(VPY) -m pipelines.train --recipe hardnet --quick --steps 1000 --data datasets/phototour-strecha \
		--train "" --option init=outputs/train/hardnet-synthetic-init.pt --out outputs/train/hardnet-real.pt \
		--eval fountain-P11 --eval_data datasets/phototour-strecha-test
	# sdb (shipped weights: the L2-Net body, --option arch=l2net; the recipe's default is now
	# SDGMNet128): synthetic warm start and entry-P10 fine-tune as earlier (no jitter, SDB_OLD)
	$(VPY) -m pipelines.train --recipe sdb $(SDB_OLD) --out outputs/train/sdb-synthetic-init.pt --quick --eval test
	$(VPY) -m pipelines.train --recipe sdb $(SDB_OLD) --quick --steps 600 --batch_size 192 --data datasets/phototour-strecha \
		--train "" --option init=outputs/train/sdb-synthetic-init.pt --out outputs/train/sdb-entry-P10.pt \
		--eval fountain-P11 --eval_data datasets/phototour-strecha-test
	# ... then 150 steps with the per-patch jitter on entry-P10 (3 resolutions) + the sceaux_castle
	# collection (datasets/phototour-real, built above; the shipped run had no Lund patches yet)
	mkdir -p datasets/phototour-sdb && for d in entry-P10-r800 entry-P10-r1200 entry-P10-r1600 sceaux_castle-r1200; do \
		ln -sfn $(abspath datasets/phototour-real)/$$d datasets/phototour-sdb/$$d; done
	$(VPY) -m pipelines.train --recipe sdb --quick --steps 150 --batch_size 128 --lr 0.001 --data datasets/phototour-sdb \
		--train "" --option arch=l2net --option init=outputs/train/sdb-entry-P10.pt --out outputs/train/sdb-real.pt \
		--eval fountain-P11 --eval_data datasets/phototour-strecha-test
	# (hardnet's and sdb's last two stages, on self-supervised photo pairs, follow the hndesc block)
	# hndesc: bundled-photo warm start (the previous shipped run), then real photos (shared photos + entry-P10)
	$(VPY) -m pipelines.train --recipe hndesc $(HNDESC_OLD) --out outputs/train/hndesc-synthetic-init.pt --quick --steps 600 --batch_size 128 --eval test
	mkdir -p outputs/photos-train && ln -sfn $(abspath $(SHARED))/photos outputs/photos-train/opencv \
		&& ln -sfn $(abspath $(SHARED))/strecha/entry-P10/images outputs/photos-train/entry-P10
	$(VPY) -m pipelines.train --recipe hndesc $(HNDESC_OLD) --quick --steps 500 --batch_size 256 --photos outputs/photos-train \
		--option init=outputs/train/hndesc-synthetic-init.pt --out outputs/train/hndesc-photos.pt \
		--eval fountain-P11 --eval_data datasets/phototour-strecha-test
	# ... then the reference batches (16 crops x <= 200 keypoints, zoom 0.8-1, +-15 deg) with
	# positives re-detected in each view (PairConf.redetect: the detector's own noise), on the
	# shared photos, entry-P10 and the two collections
	ln -sfn $(abspath $(SHARED))/collections outputs/photos-train/collections
	$(VPY) -m pipelines.train --recipe hndesc --quick --steps $(HNDESC_REDETECT_STEPS) --lr 0.0002 --photos outputs/photos-train \
		--option init=outputs/train/hndesc-photos.pt --option pair_redetect=true --option pair_max_keypoints=600 \
		--out outputs/train/hndesc-redetect.pt
	# ... then 300 steps with more (p 0.5) and darker (0.6-1.3) night renderings of view B
	$(VPY) -m pipelines.train --recipe hndesc --quick --steps 300 --lr 0.0001 --photos outputs/photos-train \
		--option init=outputs/train/hndesc-redetect.pt --option pair_redetect=true --option pair_max_keypoints=600 \
		--option pair_p_night=0.5 --option pair_night_darkness=0.6,1.3 --out outputs/train/hndesc-night.pt
	# ... then four 300-step stages of stronger perspective (PairConf.homography_strength 0.4 -> 0.8)
	prev=outputs/train/hndesc-night.pt; for s in 0.4 0.6 0.7 0.8; do \
		$(VPY) -m pipelines.train --recipe hndesc --quick --steps 300 --lr 0.0002 --photos outputs/photos-train \
			--option init=$$prev --option pair_redetect=true --option pair_max_keypoints=600 \
			--option pair_p_night=0.5 --option pair_night_darkness=0.6,1.3 \
			--option pair_homography_strength=$$s --out outputs/train/hndesc-persp$$s.pt || exit 1; \
		prev=outputs/train/hndesc-persp$$s.pt; done
	# ... and 300 steps at 0.8 with more (p 0.7) and darker (0.8-1.4) night renderings; then the
	# same stage and a 0.8 perspective stage (night p 0.5, 0.6-1.3) with patches 16 sigma wide
	prev=outputs/train/hndesc-persp0.8.pt; for mr in 12 16; do \
		$(VPY) -m pipelines.train --recipe hndesc --quick --steps 300 --lr 0.0001 --photos outputs/photos-train \
			--option init=$$prev --option pair_redetect=true --option pair_max_keypoints=600 \
			--option pair_p_night=0.7 --option pair_night_darkness=0.8,1.4 --option pair_homography_strength=0.8 \
			--option pair_mr_size=$$mr --out outputs/train/hndesc-night8-$$mr.pt || exit 1; \
		prev=outputs/train/hndesc-night8-$$mr.pt; done
	$(VPY) -m pipelines.train --recipe hndesc --quick --steps 300 --lr 0.0002 --photos outputs/photos-train \
		--option init=outputs/train/hndesc-night8-16.pt --option pair_redetect=true --option pair_max_keypoints=600 \
		--option pair_p_night=0.5 --option pair_night_darkness=0.6,1.3 --option pair_homography_strength=0.8 \
		--option pair_mr_size=16 --out outputs/train/hndesc-persp16.pt
	# ... then that stage once more with the paper's triplet variant (hardest in-batch negative,
	# margin 1: --option loss=triplet), seeds 0, 1 and 2, and the weight average of the three
	for seed in 0 1 2; do $(VPY) -m pipelines.train --recipe hndesc --quick --steps 300 --lr 0.0002 \
		--photos outputs/photos-train --option init=outputs/train/hndesc-persp16.pt --option pair_redetect=true \
		--option pair_max_keypoints=600 --option pair_p_night=0.5 --option pair_night_darkness=0.6,1.3 \
		--option pair_homography_strength=0.8 --option pair_mr_size=16 --option loss=triplet --seed $$seed \
		--out outputs/train/hndesc-triplet-seed$$seed.pt || exit 1; done
	$(VPY) -m pipelines.train --recipe hndesc --average outputs/train/hndesc-triplet-seed0.pt \
		outputs/train/hndesc-triplet-seed1.pt outputs/train/hndesc-triplet-seed2.pt --out weights/hndesc.pt
	# hardnet and sdb: 300-step stages on hndesc's self-supervised pairs of the training photos
	# (positives re-detected) under stronger perspective (corner jitter 0.6, then 0.8; hardnet runs
	# 0.8 three times), from their real-patch runs, then 150 steps back on the real patch sets
	# (patch FPR95); each averages its last two stages, then runs one more round with seeds
	# (below). hardnet's 0.8 stages and both real-patch stages cut their patches at 16 sigma
	# (extraction's)
	prev=outputs/train/hardnet-real.pt; k=0; for s in 0.6 0.8 0.8 0.8; do \
		k=$$((k + 1)); mr=16; [ $$s = 0.6 ] && mr=12; out=outputs/train/hardnet-pairs-$$k.pt; \
		$(VPY) -m pipelines.train --recipe hardnet --quick --steps 300 --lr 1.0 --option init=$$prev \
			--option data=pairs --photos outputs/photos-train --option pair_redetect=true \
			--option pair_max_keypoints=600 --option pair_homography_strength=$$s --option pair_mr_size=$$mr \
			--out $$out || exit 1; prev=$$out; done
	$(VPY) -m pipelines.train --recipe hardnet --quick --steps 150 --lr 1.0 --data datasets/phototour-real16 --train "" \
		--option init=outputs/train/hardnet-pairs-4.pt --out outputs/train/hardnet-pairs-real.pt
	$(VPY) -m pipelines.train --recipe hardnet --average outputs/train/hardnet-pairs-real.pt \
		outputs/train/hardnet-pairs-4.pt --out outputs/train/hardnet-pairs-avg.pt
	# ... then one seeded round from that average (seeded_round below: pair seeds 0-2, real-patch
	# seeds 0 and 1)
	$(call seeded_round,hardnet,--lr 1.0,outputs/train/hardnet-pairs-avg.pt,hardnet-pairs5,0 1)
	prev=outputs/train/sdb-real.pt; for s in 0.6 0.8; do \
		$(VPY) -m pipelines.train --recipe sdb --quick --steps 300 --batch_size 128 --lr 0.001 --option arch=l2net \
			--option init=$$prev --option data=pairs --photos outputs/photos-train --option pair_redetect=true \
			--option pair_max_keypoints=600 --option pair_homography_strength=$$s \
			--out outputs/train/sdb-pairs$$s.pt || exit 1; prev=outputs/train/sdb-pairs$$s.pt; done
	$(VPY) -m pipelines.train --recipe sdb --quick --steps 150 --batch_size 128 --lr 0.001 --data datasets/phototour-real16 \
		--train "" --option arch=l2net --option init=outputs/train/sdb-pairs0.8.pt --out outputs/train/sdb-pairs0.8-real.pt
	# sdb ships the weight average of the last two stages (pairs 0.8 and the real-patch steps)
	$(VPY) -m pipelines.train --recipe sdb --average outputs/train/sdb-pairs0.8-real.pt outputs/train/sdb-pairs0.8.pt \
		--out outputs/train/sdb-pairs-avg.pt
	# ... then one seeded round from that average as for hardnet, real-patch seeds 0, 1 and 2
	$(call seeded_round,sdb,--batch_size 128 --lr 0.001 --option arch=l2net,outputs/train/sdb-pairs-avg.pt,sdb-pairs16,0 1 2)
	# wlrn: the previous shipped synthetic run as warm start (recorded in its sidecar; the recipe's
	# quick defaults have changed since: rmsprop lr 1e-4, code loss), then weak labels from REAL
	# photos: scenes = entry-P10, sceaux_castle, lund, and the shared photos (known pairs by name)
	$(VPY) -m pipelines.train --recipe wlrn --out outputs/train/wlrn-synthetic-init.pt --quick --eval test
	mkdir -p outputs/scenes-train && ln -sfn $(abspath $(SHARED))/strecha/entry-P10/images outputs/scenes-train/entry-P10 \
		&& ln -sfn $(abspath $(SHARED))/collections/sceaux_castle/images outputs/scenes-train/sceaux_castle \
		&& ln -sfn $(abspath $(SHARED))/collections/lund/images outputs/scenes-train/lund \
		&& ln -sf $(abspath $(SHARED))/photos/* outputs/scenes-train/ && mkdir -p outputs/bags-real
	$(VPY) -m pipelines.train --recipe wlrn --quick --steps 240 --batch_size 6 --data outputs/bags-real --train "" \
		--option scenes=outputs/scenes-train --option schedule=fixed --option bag_size=48 \
		--option init=outputs/train/wlrn-synthetic-init.pt --out outputs/train/wlrn-real-240.pt
	# ... then 800 steps of 8 triplets on bags at five scales per photo (274 bags)
	$(VPY) -m pipelines.train --recipe wlrn --quick --steps 800 --batch_size 8 --data outputs/bags-real --train "" \
		--option scenes=outputs/scenes-train --option schedule=fixed --option bag_size=48 \
		--option 'real_bags_conf={"scales":[480,640,800,1024,1280]}' \
		--option init=outputs/train/wlrn-real-240.pt --out outputs/train/wlrn-real-800.pt
	# ... then five 300-step stages on bags of the training photos under stronger homographies
	# (bags of one photo match; corner jitter S = 0.6, 0.8, 0.9, 1.0, then 0.9 at half the lr;
	# the default is 0.25; each setting caches its own bag file, its name hashes bags_conf)
	mkdir -p outputs/bags-persp; prev=outputs/train/wlrn-real-800.pt; k=0; \
	for sl in 0.6:0.0001 0.8:0.0001 0.9:0.0001 1.0:0.0001 0.9:0.00005; do \
		s=$${sl%:*}; l=$${sl#*:}; k=$$((k + 1)); out=outputs/train/wlrn-persp-$$k.pt; \
		$(VPY) -m pipelines.train --recipe wlrn --quick --steps 300 --batch_size 8 --lr $$l --photos outputs/photos-train \
			--option "bags_conf={\"homography_strength\":$$s}" --option schedule=fixed --option bag_size=48 \
			--option init=$$prev --data outputs/bags-persp --train "" --out $$out || exit 1; prev=$$out; done
	# the last stage again with seed 1; wlrn ships the weight average of the two seeds (its
	# held-out graffiti count moves by +-5 from run to run)
	$(VPY) -m pipelines.train --recipe wlrn --quick --steps 300 --batch_size 8 --lr 0.00005 --photos outputs/photos-train \
		--option "bags_conf={\"homography_strength\":0.9}" --option schedule=fixed --option bag_size=48 \
		--option init=outputs/train/wlrn-persp-4.pt --data outputs/bags-persp --train "" --seed 1 \
		--out outputs/train/wlrn-persp-5-seed1.pt
	$(VPY) -m pipelines.train --recipe wlrn --average outputs/train/wlrn-persp-5.pt outputs/train/wlrn-persp-5-seed1.pt \
		--out outputs/train/wlrn-persp-avg.pt
	# ... then that stage once more from the average with the bag patches cut at 16 sigma (the
	# extraction support), seeds 0 and 1, and the weight average of the two
	for seed in 0 1; do $(VPY) -m pipelines.train --recipe wlrn --quick --steps 300 --batch_size 8 --lr 0.00005 \
		--photos outputs/photos-train --option "bags_conf={\"homography_strength\":0.9,\"mr_size\":16}" \
		--option schedule=fixed --option bag_size=48 --option init=outputs/train/wlrn-persp-avg.pt \
		--data outputs/bags-persp --train "" --seed $$seed --out outputs/train/wlrn16-seed$$seed.pt || exit 1; done
	$(VPY) -m pipelines.train --recipe wlrn --average outputs/train/wlrn16-seed0.pt outputs/train/wlrn16-seed1.pt \
		--out weights/wlrn.pt
	# fracking: native 64x64 CNN3 from scratch on the real patch sets cut at 16 sigma (entry-P10 x 3 +
	# collections), each patch standardised (input_norm=patch), B^M = 32 with the paper's best
	# R_P / R_N = 8 / 8 mining; Adam at lr 0.001 (the paper's SGD leaves the loss flat here; see README)
	$(VPY) -m pipelines.train --recipe fracking --quick --steps 600 --lr 0.001 --batch_size 32 --option optimizer=adam \
		--option r_p=8 --option r_n=8 --arch_option input_norm=patch --data datasets/phototour-real16 --train "" \
		--out weights/fracking.pt --eval fountain-P11 --eval_data datasets/phototour-strecha-test

# All five recipes at their published batch sizes on ONE GPU (about 12 min on an H100, estimated),
# on the real Brown patch sets under $(PATCHES) (built by `make weights`, or by pipelines.make_patches
# from the SfM'd collections) and the real photos of $(SHARED); writes checkpoints and the
# real_matching table to outputs/weights-gpu (weights/ untouched); hardnet and sdb then run their
# pair and real-patch stages and ship their average, as the shipped CPU weights, the real-patch
# stages on the 16-sigma sets of $(PATCHES16). CPU smoke run:
# $(VPY) -m pipelines.weights_gpu --shared $(SHARED) --patches $(PATCHES) --steps 2 --device cpu
PATCHES ?= datasets/phototour-real
PATCHES16 ?= datasets/phototour-real16
weights-gpu: install
	test -d $(SHARED) || { echo "make weights-gpu: $(SHARED) not found"; exit 1; }
	$(VPY) -m pipelines.weights_gpu --shared $(SHARED) --patches $(PATCHES) --patches16 $(PATCHES16) \
		--out outputs/weights-gpu

bench: install
	$(VPY) benchmarks/descriptor_speed.py
	$(VPY) benchmarks/matching_speed.py
	$(VPY) benchmarks/pipeline_stages.py
	$(VPY) benchmarks/scale.py

# Real-image benchmarks (need ../shared/data; they say so and exit when it is absent)
bench-real: install
	$(VPY) benchmarks/real_matching.py --shared $(SHARED)
	$(VPY) benchmarks/real_relocalization.py --shared $(SHARED) --features sift rootsift hardnet

clean:
	rm -rf outputs
