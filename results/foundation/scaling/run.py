"""Downstream gain vs pretraining size: the study-cpu config's 1e3 cells, fine-tuned from the multiclass models
pretrained on 834 / 8,334 / 83,334 events per process, against the same tuned scratch cells (copied)."""
import shutil, subprocess, sys, yaml
from pathlib import Path
base = yaml.safe_load(open('/work/main/configs/study-cpu.yaml'))
models = {"1e4": "/work/data/foundation/multiclass-834-lr0.0003", "1e5": "/work/data/foundation/multiclass-8334-lr0.0003",
          "1e6": "/work/data/foundation/multiclass-full-lr0.0003"}
src = Path('/work/study-cpu-run')
for tag, model in models.items():
    out = Path(f'/work/data/scaling/{tag}')
    out.mkdir(parents=True, exist_ok=True)
    if not (out / 'stores').exists():
        (out / 'stores').symlink_to(src / 'stores')
    for task in base['tasks']:
        dst = out / 'cells' / task / '1000' / 'scratch'
        if not dst.exists():
            shutil.copytree(src / 'cells' / task / '1000' / 'scratch', dst)
    cfg = dict(base, sizes=[1000], strategies=['scratch', 'finetune_multiclass'])
    cfg['pretrain'] = dict(base['pretrain'], multiclass=model)
    cfg['finetune'] = {k: v for k, v in base['finetune'].items() if k != 'by_size'}
    yaml.safe_dump(cfg, open(out / 'config.yaml', 'w'))
    r = subprocess.run(['hepfm', 'study', str(out / 'config.yaml'), '--out', str(out), '--size', '1000', '--no-progress'])
    print(tag, 'exit', r.returncode, flush=True)
