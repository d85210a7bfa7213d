# Publishes a flake directory to a remote whenever its content changes.
#
# At plan time the external data source runs `npcnix pack --hash-only`,
# which packs deterministically in memory and prints the archive's BLAKE3:
# the same tree always gives the same hash, so an unchanged flake plans no
# change. When the hash (or the remote) changes, the terraform_data resource
# is replaced and its provisioner packs the tree into a file, checks that
# the file's hash is still the planned one, and publishes exactly that file
# (`npcnix publish --archive`): what gets signed is what the plan showed.
#
# Needs on the machine running Terraform: npcnix, sh and jq.

data "external" "pack" {
  program = ["sh", "${path.module}/pack-hash.sh"]

  query = {
    npcnix    = var.npcnix
    src       = var.src
    all_files = var.all_files ? "1" : "0"
  }
}

resource "terraform_data" "publish" {
  triggers_replace = merge(var.triggers, {
    blake3     = data.external.pack.result.blake3
    remote_url = var.remote_url
  })

  provisioner "local-exec" {
    interpreter = ["sh"]
    command     = "${path.module}/publish.sh"

    # Values go through the environment, never through a shell command
    # line, so no quoting is involved. NPCNIX_PASSPHRASE (for an encrypted
    # key) is inherited from Terraform's own environment.
    environment = {
      NPCNIX                 = var.npcnix
      NPCNIX_REMOTE          = var.remote_url
      NPCNIX_SRC             = var.src
      NPCNIX_KEY_FILE        = var.key_file
      NPCNIX_REMOTE_REGION   = var.remote_region == null ? "" : var.remote_region
      NPCNIX_ENDPOINT        = var.endpoint == null ? "" : var.endpoint
      NPCNIX_EXPIRES         = var.expires == null ? "" : var.expires
      NPCNIX_COMMENT         = var.comment == null ? "" : var.comment
      NPCNIX_ALL_FILES       = var.all_files ? "1" : "0"
      NPCNIX_EXPECTED_BLAKE3 = data.external.pack.result.blake3
    }
  }
}
