"""Serving the bundle with MONAI Label, finding its probably wrong labels, and bringing the annotators'
labels back to JCAS training (``docs/monailabel.md``).

- :func:`deploy_bundle` (:mod:`~jcas_monai.monailabel_app.deploy`): the bundle into an app folder, with
  the app's ``main.py`` (:class:`~jcas_monai.monailabel_app.app.JCASApp`);
- :class:`~jcas_monai.monailabel_app.label_issues.LabelIssueScoring` and
  :class:`~jcas_monai.monailabel_app.label_issues.MostLikelyMislabelled`: each labelled image's label-issue
  score in the datastore, and the review queue ordered by it;
- :func:`export_datalist` (:mod:`~jcas_monai.monailabel_app.datastore`): the datastore's labelled images as
  a datalist.

Usage::

    python -m jcas_monai.monailabel_app deploy --app apps/jcas [--name jcas] [--model PATH]
    python -m jcas_monai.monailabel_app datalist --studies DIR --out DIR/datalist.json [--clean-tag TAG]

Only the app and its tasks import MONAI Label (an optional extra).
"""

from .cli import main
from .datastore import export_datalist
from .deploy import APP_MAIN, deploy_bundle, serves_jcas_app

__all__ = ["APP_MAIN", "deploy_bundle", "export_datalist", "main", "serves_jcas_app"]
