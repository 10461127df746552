<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<!-- AI Factory scores raster (one uint8 band per class, score x 255, masked where not predicted):
     band 1 as a transparent-to-red ramp labelled in scores 0-1. Pick another band in the layer
     properties to see another class. -->
<qgis version="3.22.16-Białowieża" styleCategories="Symbology">
  <pipe>
    <provider>
      <resampling enabled="false" zoomedInResamplingMethod="nearestNeighbour"
                  zoomedOutResamplingMethod="nearestNeighbour" maxOversampling="2"/>
    </provider>
    <rasterrenderer type="singlebandpseudocolor" band="1" opacity="0.8" alphaBand="-1" nodataColor=""
                    classificationMin="0" classificationMax="255">
      <rasterTransparency/>
      <minMaxOrigin>
        <limits>None</limits>
        <extent>WholeRaster</extent>
        <statAccuracy>Estimated</statAccuracy>
        <cumulativeCutLower>0.02</cumulativeCutLower>
        <cumulativeCutUpper>0.98</cumulativeCutUpper>
        <stdDevFactor>2</stdDevFactor>
      </minMaxOrigin>
      <rastershader>
        <colorrampshader colorRampType="INTERPOLATED" classificationMode="2" clip="0" minimumValue="0"
                         maximumValue="255" labelPrecision="2">
          <item alpha="0" value="0" label="0.00" color="#ffffb2"/>
          <item alpha="90" value="64" label="0.25" color="#fecc5c"/>
          <item alpha="170" value="128" label="0.50" color="#fd8d3c"/>
          <item alpha="220" value="191" label="0.75" color="#f03b20"/>
          <item alpha="255" value="255" label="1.00" color="#bd0026"/>
        </colorrampshader>
      </rastershader>
    </rasterrenderer>
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0" colorizeRed="255" colorizeGreen="128"
                   colorizeBlue="128" colorizeStrength="100" invertColors="0"/>
    <rasterresampler maxOversampling="2"/>
    <resamplingStage>resamplingFilter</resamplingStage>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
