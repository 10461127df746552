<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE TS>
<TS version="2.1" language="fr">
  <context>
    <name>AIFactory</name>
    <message>
      <source>AI Factory — Dataset</source>
      <translation>AI Factory — Jeu de données</translation>
    </message>
    <message>
      <source>Sources</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Layers of this project</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Catalog (with context filters)</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Catalog (*.gpkg)</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Level of the class hierarchy (vegetation/tree: 1 = vegetation, 2 = tree)</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Source</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Catalog</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Rasters</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Annotations</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Class field</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Hierarchy level</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Context filters (% of the image or tile)</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Split and chips</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Strategy</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Validation share</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Test share</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Chip size (px)</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Seed</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Objects per class and split</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Build dataset</source>
      <translation>Construire le jeu de données</translation>
    </message>
    <message>
      <source>Output folder</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>counting…</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>spatial blocks</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>whole images</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Tick at least one raster.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Tick at least one annotation layer.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>No annotation layer overlaps the ticked rasters.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Nothing to preview</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Choose the catalog GeoPackage.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Choose the class field.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>{0} objects in {1} classes · chips: {2}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Preview failed: {0}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Layer “{0}” is filtered ({1}) but the dataset would be made from all its features: clear the filter, or save the filtered features as a file of their own (Export ▸ Save Features As…).</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Preview answer not understood: {0}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>dataset {0}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>AI Factory — Geofences</source>
      <translation>AI Factory — Géorepérages</translation>
    </message>
    <message>
      <source>Geofence layer</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>GeoPackage (*.gpkg)</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>File</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Raster (CRS)</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Geofences</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Use selected for prediction</source>
      <translation>Utiliser la sélection pour la prédiction</translation>
    </message>
    <message>
      <source>geofences</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>New</source>
      <translation>Nouveau</translation>
    </message>
    <message>
      <source>Open</source>
      <translation>Ouvrir</translation>
    </message>
    <message>
      <source>name</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>mode</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>enabled</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Draw</source>
      <translation>Dessiner</translation>
    </message>
    <message>
      <source>Save edits</source>
      <translation>Enregistrer les modifications</translation>
    </message>
    <message>
      <source>Include</source>
      <translation>Inclure</translation>
    </message>
    <message>
      <source>Exclude</source>
      <translation>Exclure</translation>
    </message>
    <message>
      <source>Choose where to create the geofence GeoPackage.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Create or open a geofence GeoPackage first.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Select at least one enabled geofence.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>{0} geofence(s) will be used by the next prediction</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Cannot create {0}: {1}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>{0} has no “{1}” layer with fields name, mode, enabled.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Could not save the geofences: {0}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Cannot write {0}: {1}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>AI Factory — Jobs</source>
      <translation>AI Factory — Tâches</translation>
    </message>
    <message>
      <source>Launch</source>
      <translation>Lancement</translation>
    </message>
    <message>
      <source>YAML config (*.yaml *.yml)</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>any</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>git commit, tag or branch (remote runs)</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Run</source>
      <translation>Lancer</translation>
    </message>
    <message>
      <source>This computer</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Current job</source>
      <translation>Tâche en cours</translation>
    </message>
    <message>
      <source>none</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Cancel</source>
      <translation>Annuler</translation>
    </message>
    <message>
      <source>Stop the job shown here. To stop another running job, select it in the History below first.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>History</source>
      <translation>Historique</translation>
    </message>
    <message>
      <source>Load outputs</source>
      <translation>Charger les résultats</translation>
    </message>
    <message>
      <source>Run again</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Start the selected job's command again, as a new job</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>CPU </source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>GPU </source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Job</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Config</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Model run</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Raster</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Predict inside</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Never inside</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Machine</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Resources</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Memory</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Code ref</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>metric</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>value</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>step</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>starting…</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Select a job in the history first.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>a new folder under {0}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>train {0}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Ray: {0}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Choose the {0} config file (YAML) first.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Choose a trained run folder (with model.json) as the model.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Choose a file-based raster layer to predict.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>predict {0}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>{0}: {1}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>“{0}” is still running: cancel it first, or wait for it to end.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>No output of “{0}” can be loaded from this computer.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>pipeline {0}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>artifact {0}: {1}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>AI Factory — Review</source>
      <translation>AI Factory — Revue</translation>
    </message>
    <message>
      <source>Detections to review</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>no detection</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Export labels</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Write the accepted and relabelled detections, with their reviewed class, as training labels</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Layer</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Order</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Relabel as</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Labels file</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>◀ Previous (P)</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Next (N) ▶</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Accept (A)</source>
      <translation>Accepter (A)</translation>
    </message>
    <message>
      <source>Reject (R)</source>
      <translation>Rejeter (R)</translation>
    </message>
    <message>
      <source>Relabel (L)</source>
      <translation>Réétiqueter (L)</translation>
    </message>
    <message>
      <source>Type or pick the class to relabel to.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Choose a reviewed detections layer and the labels file to write.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>{0}/{1} · {2} · score {3:.3f} · {4}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>{0} of {1} reviewed · {2} accepted · {3} rejected · {4} relabelled</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>{0} labels written to {1}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Layer “{0}” lacks the field(s) {1}: review works on detections written by aifactory predict.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Layer “{0}” is read-only in this project: the review is not written.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Save the edits of “{0}” first: the labels are exported from the file.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>{0} is the detections file itself: choose another labels file.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Could not write the review to “{0}” (read-only file?)</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>AI Factory — Operating point (RPS)</source>
      <translation>AI Factory — Point de fonctionnement (RPS)</translation>
    </message>
    <message>
      <source>Detections</source>
      <translation>Détections</translation>
    </message>
    <message>
      <source>The detections' score (0–1): “score” for layers written by aifactory predict</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Score field</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Score ≥</source>
      <translation>Score ≥</translation>
    </message>
    <message>
      <source>Area ≥</source>
      <translation>Surface ≥</translation>
    </message>
    <message>
      <source>Kept</source>
      <translation>Conservées</translation>
    </message>
    <message>
      <source>Precision / recall</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>RPS table (points.csv *.csv)</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Compute RPS against truth</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>no RPS table</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Load…</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Save…</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>RPS table</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Truth layer</source>
      <translation>Couche de vérité terrain</translation>
    </message>
    <message>
      <source>Operating point</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>not filtered</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>no score field</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Choose a detections layer and a truth layer first.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Both layers must be files (GeoPackage, shapefile…) for the worker to read them.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Operating point saved to {0}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Layer “{0}” has no “score” field: choose a detections layer written by aifactory predict, or its score field (0–1) under “Score field”.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>{0} of {1} detections</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>precision {0:.3f} · recall {1:.3f} · F1 {2:.3f}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>NMS IoU {0:g}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>The operating point also applies {0}: the figures shown include it, the map shows the detections before it.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Cannot read the RPS table: {0}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>RPS of {0}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Layer “{0}” is in an edit session: QGIS filters it again once the edits are saved or discarded.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Layer “{0}” refused the filter {1} (is it a GeoPackage or shapefile?)</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>AI Factory — Tagging (active learning)</source>
      <translation>AI Factory — Annotation (apprentissage actif)</translation>
    </message>
    <message>
      <source>Tiles to tag</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Tiles from al select (*.gpkg)</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>no tile</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Tiles file</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Tiles layer</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Annotate on</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Next round</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>al round config (*.yaml *.yml)</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Launch next round</source>
      <translation>Lancer le tour suivant</translation>
    </message>
    <message>
      <source>Round config</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>AL tiles</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>◀ Previous (,)</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Next (.) ▶</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Tagged (T)</source>
      <translation>Annotée (T)</translation>
    </message>
    <message>
      <source>Skip (S)</source>
      <translation>Passer (S)</translation>
    </message>
    <message>
      <source>Choose the al round config YAML (see resources/examples/al_round.yaml).</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>{0} to tag · {1} tagged · {2} skipped</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>tile {0}/{1} · {2}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>active learning round</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>{0} is not a readable tiles layer.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Layer “{0}” has no “status” field: load the tiles written by aifactory al select.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Layer “{0}” is read-only in this project: the status is not written.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Could not save the annotations: {0}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Could not write the status to “{0}”</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>still running on the cluster when QGIS unloaded the plugin</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>{0}: done, {1} layer(s) loaded</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>stopped when the plugin was unloaded</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>{0}: stopped</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>{0} failed: {1}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>the job failed</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>The worker failed ({0})</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>no answer within {0:g} s</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>the job failed (exit code {0})</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Could not start the worker {0}: {1}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>could not start {0}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Ray cluster at {0} is unreachable or refused the job ({1}): check its address and token in AI Factory ▸ Settings.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Lost contact with Ray job {0} at {1} ({2})</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>No Ray cluster named {0} in AI Factory ▸ Settings</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>submitting to {0}: {1}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Ray cluster at {0} did not return a job id</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Ray job {0} submitted</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>error: {0}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Ray cluster at {0} answered {1} with something that is not JSON</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>AI &amp;Factory</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>AI Factory</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Settings…</source>
      <translation>Paramètres…</translation>
    </message>
    <message>
      <source>could not start it: {0}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Cancelled: the worker was stopped.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Dataset config</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Dataset folder</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Training config</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Run folder</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Trained run folder</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Predict only inside</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Never predict inside</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Scores</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Choose a raster layer.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Operations (YAML)</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Post-processed detections</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Truth</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Metrics</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>no answer within {0} s</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>No worker Python is set: choose the interpreter of an environment with aifactory installed in AI Factory ▸ Settings.</source>
      <translation>Aucun Python de worker n’est défini : choisissez l’interpréteur d’un environnement où aifactory est installé dans AI Factory ▸ Paramètres.</translation>
    </message>
    <message>
      <source>The worker Python {0} cannot run aifactory ({1}): install aifactory in it or choose another interpreter in AI Factory ▸ Settings.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>The worker Python {0} does not exist: fix it in AI Factory ▸ Settings.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>AI Factory settings</source>
      <translation>Paramètres d’AI Factory</translation>
    </message>
    <message>
      <source>Check</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Worker Python</source>
      <translation>Python du worker</translation>
    </message>
    <message>
      <source>MLflow tracking URI</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Job folder</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>checking…</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Jobs API URL (dashboard)</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>token</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Add cluster</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Remove cluster</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Ray clusters (tokens are kept in the QGIS authentication database)</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>cluster</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>✗ {0}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>not an aifactory worker</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>, often a sign of too little memory</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>killed by signal {0} ({1}){2}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>exit code {0}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>crashed, code {0}</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>Layer “{0}” is in {1} but raster “{2}” is in {3}: reproject it (Processing ▸ Reproject layer) first.</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>an unknown CRS</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>No preview yet</source>
      <translation type="unfinished" />
    </message>
    <message>
      <source>recall</source>
      <translation>rappel</translation>
    </message>
    <message>
      <source>precision ↑</source>
      <translation type="unfinished" />
    </message>
  </context>
</TS>
