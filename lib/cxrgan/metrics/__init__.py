"""Stage 4, how close are generated images to real ones: feature networks, FID/KID/IS/PR arithmetic, the
memorisation audit and fid_is's protocol."""
