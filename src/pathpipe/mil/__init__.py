"""The mil stage: slide classification by gated attention-based deep MIL (AMIL) on tile features.

After CellFiNet (MICCAI 2023 workshops) on top of attention-based deep multiple
instance learning (Ilse, Tomczak & Welling 2018, gated attention): each slide
is a bag of its tiles' preprocessed cellular features, the model weighs the
tiles by attention and classifies the slide; a tile-level random forest is the
benchmark. The stage also fits the cohort feature preprocessing, explains the
final model with SHAP and draws each slide's attention.

Modules, one concern each (import names from them; this package imports
nothing):

======================  ==============================================================
``params``              :class:`MILParams`, :class:`ExplainParams`,
                        :class:`HeatmapParams` (config ``mil``, ``mil.explain``,
                        ``mil.heatmap``)
``preprocessing``       :class:`PreprocessingParams` (config ``mil.preprocessing``),
                        :class:`FeaturePreprocessor`, :func:`preprocess_cohort`
``bags``                tile tables of a cohort read into bags; bag and label checks
``splits``              :func:`make_splits`: patient-grouped test set and
                        stratified folds (no torch)
``model``               :class:`GatedAttentionMIL`
``train``               :func:`train_amil`, :func:`predict_amil`
``baseline``            :class:`RandomForestBaseline` (no torch)
``embeddings``          :func:`read_embeddings`: user tile embeddings (the
                        "conventional AMIL" row)
``io``                  :func:`save_amil`, :func:`load_amil`: AMIL model folders
``crossval``            :func:`run_cross_validation`: folds, final models, Table 1
``outputs``             :func:`write_mil_outputs`: Table 1, predictions, ROC, metrics, models
``cohort``              :func:`train_cohort`, :func:`predict_slides` (path level)
``explain_shap``        slide- and tile-level SHAP values of the AMIL log-odds
``explain_importance``  importance tables per feature and per feature family
``explain_figures``     beeswarm and waterfall plots
``explain``             :func:`explain_cohort` (path level)
``attention_maps``      tile attention table, rasterising onto a thumbnail, colours
``attention_figures``   heatmap figure and tile gallery
``attention``           :func:`explain_slide_attention` (path level)
======================  ==============================================================

The command line is ``pathpipe mil train|predict|explain|attention|preprocess``
(:mod:`pathpipe.cli.mil`). torch, shap and matplotlib are imported only by the
modules or functions that need them.
"""
