# The configuration the Terraform tests apply: only Terraform's built-in provider, so nothing
# is downloaded. `snapshot` is a directory of the test's: the first resource copies the run's
# working directory there (to look for secrets in it) and the access key id it was given; the
# second counts its creations and can be slowed down (`delay`, seconds) to be interrupted.

variable "name" {
  type = string
}

variable "snapshot" {
  type = string
}

variable "delay" {
  type    = number
  default = 0
}

resource "terraform_data" "base" {
  input = var.snapshot

  provisioner "local-exec" {
    command = "mkdir -p ${var.snapshot}/workdir && cp -r . ${var.snapshot}/workdir/ && printf %s \"$AWS_ACCESS_KEY_ID\" > ${var.snapshot}/key-id"
  }

  provisioner "local-exec" {
    when    = destroy
    command = "touch ${self.input}/destroyed"
  }
}

resource "terraform_data" "greeting" {
  input            = "hello ${var.name}"
  triggers_replace = [var.name]
  depends_on       = [terraform_data.base]

  provisioner "local-exec" {
    command = "echo started >> ${var.snapshot}/applies && sleep ${var.delay} && echo finished >> ${var.snapshot}/applies"
  }
}

output "greeting" {
  value = terraform_data.greeting.output
}

output "base_id" {
  value = terraform_data.base.id
}

output "token" {
  value     = "token-${var.name}"
  sensitive = true
}
